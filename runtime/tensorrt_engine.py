"""TensorRT engines at run time: is this engine usable here, and a Polygraphy runner for it.

A serialized engine only deserializes on the TensorRT version and GPU it was built for, unless it was
built version-compatible (any later TensorRT of the same major version) or hardware-compatible
(`ampere+`: any GPU of compute capability 8.0 or newer; `same-cc`: any GPU of the same compute
capability). `aarm-export build` records the TensorRT version, GPU name and compute capability and
those two options in the engine's sidecar under `extra["tensorrt"]`; `check_engine_compatible` compares
them with the running machine before TensorRT gets a chance to fail with a less helpful message.

`tensorrt` is imported lazily inside functions: importing this module works on a CPU-only machine.
"""

import ctypes
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from aarm.errors import ArtifactError, BackendUnavailable
from runtime.artifact import Sidecar, read_sidecar

INSTALL_HINT = (
    "install TensorRT's Python bindings: `pip install tensorrt` (NVIDIA's wheels on PyPI, "
    "extra index https://pypi.nvidia.com) on an x86-64/SBSA machine with an NVIDIA driver, "
    "or the python3-libnvinfer package that JetPack ships on Jetson"
)
HARDWARE_COMPAT = ("none", "ampere+", "same-cc")

# CUDA driver API attribute ids (cuda.h, CUdevice_attribute); stable since CUDA 2.x.
_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75
_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76


@dataclass(frozen=True)
class EngineTarget:
    """What an engine is tied to: TensorRT version ("10.3.0.30"), GPU name and compute capability ("8.7")."""

    tensorrt: str
    gpu: str
    compute_capability: str

    @classmethod
    def from_sidecar(cls, sidecar: Sidecar) -> "EngineTarget":
        info = sidecar.extra.get("tensorrt")
        if not isinstance(info, dict) or not all(k in info for k in ("version", "gpu", "compute_capability")):
            raise ArtifactError("engine sidecar lacks extra.tensorrt {version, gpu, compute_capability}; "
                                "rebuild the engine with `aarm-export build`")
        return cls(str(info["version"]), str(info["gpu"]), str(info["compute_capability"]))


def require_tensorrt() -> ModuleType:
    """The `tensorrt` module, or BackendUnavailable saying how to install it."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable(f"TensorRT is not available here ({exc}); {INSTALL_HINT}") from None
    return trt


def tensorrt_version() -> str | None:
    """The importable TensorRT's version, or None where `import tensorrt` fails."""
    try:
        import tensorrt as trt
    except ImportError:
        return None
    return str(trt.__version__)


def _cuda_driver() -> ctypes.CDLL:
    name = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"
    try:
        return ctypes.CDLL(name)
    except OSError:
        raise BackendUnavailable(f"no NVIDIA driver here ({name} not found); TensorRT engines need a CUDA GPU"
                                 ) from None


def current_gpu(device: int = 0) -> tuple[str, str]:
    """(name, compute capability "major.minor") of CUDA device `device`, read through the CUDA driver API.

    Uses libcuda directly (no CUDA toolkit, torch or cuda-python needed); honours CUDA_VISIBLE_DEVICES.
    """
    lib = _cuda_driver()

    def check(status: int, call: str) -> None:
        if status != 0:
            raise BackendUnavailable(f"CUDA driver call {call} failed with CUresult {status}; "
                                     "is a GPU visible?")

    check(lib.cuInit(0), "cuInit")
    dev = ctypes.c_int()
    check(lib.cuDeviceGet(ctypes.byref(dev), device), f"cuDeviceGet({device})")
    name = ctypes.create_string_buffer(256)
    check(lib.cuDeviceGetName(name, len(name), dev), "cuDeviceGetName")
    major, minor = ctypes.c_int(), ctypes.c_int()
    check(lib.cuDeviceGetAttribute(ctypes.byref(major), _CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev),
          "cuDeviceGetAttribute(major)")
    check(lib.cuDeviceGetAttribute(ctypes.byref(minor), _CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev),
          "cuDeviceGetAttribute(minor)")
    return name.value.decode(errors="replace"), f"{major.value}.{minor.value}"


def running_target() -> EngineTarget:
    """TensorRT version and GPU of this machine (BackendUnavailable when either is missing)."""
    trt = require_tensorrt()
    gpu, cc = current_gpu()
    return EngineTarget(str(trt.__version__), gpu, cc)


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    if not parts:
        raise ArtifactError(f"unreadable TensorRT version {version!r}")
    return tuple(parts)


def _cc_tuple(cc: str) -> tuple[int, int]:
    try:
        major, minor = cc.split(".")
        return int(major), int(minor)
    except ValueError:
        raise ArtifactError(f"unreadable compute capability {cc!r}") from None


def compatibility_problems(
    built: EngineTarget,
    running: EngineTarget,
    *,
    hardware_compat: str = "none",
    version_compatible: bool = False,
) -> list[str]:
    """Why an engine built for `built` cannot run on `running` ([] when it can).

    TensorRT version: equal major.minor.patch, or with `version_compatible` the same major version and a
    running version no older than the build's. GPU: `none` needs the same GPU model (name and compute
    capability), `same-cc` the same compute capability, `ampere+` compute capability >= 8.0.
    """
    if hardware_compat not in HARDWARE_COMPAT:
        raise ArtifactError(f"unknown hardware compatibility {hardware_compat!r}; "
                            f"expected one of {HARDWARE_COMPAT}")
    problems = []
    b, r = _version_tuple(built.tensorrt), _version_tuple(running.tensorrt)
    if version_compatible:
        if b[0] != r[0] or r < b:
            problems.append(f"version-compatible engine built with TensorRT {built.tensorrt} needs TensorRT "
                            f"{b[0]}.x >= {built.tensorrt}, this machine has {running.tensorrt}")
    elif b[:3] != r[:3]:
        problems.append(f"built with TensorRT {built.tensorrt}, this machine has {running.tensorrt}")
    if hardware_compat == "ampere+":
        if _cc_tuple(running.compute_capability) < (8, 0):
            problems.append(f"ampere+ engine needs compute capability >= 8.0, {running.gpu} has "
                            f"{running.compute_capability}")
    elif _cc_tuple(built.compute_capability) != _cc_tuple(running.compute_capability):
        problems.append(f"built for compute capability {built.compute_capability} ({built.gpu}), this GPU "
                        f"({running.gpu}) has {running.compute_capability}")
    elif hardware_compat == "none" and built.gpu != running.gpu:
        problems.append(f"built on {built.gpu}, this GPU is {running.gpu} (same compute capability: "
                        f"rebuild with --hardware-compat same-cc to share one engine)")
    return problems


def check_engine_compatible(engine_path: str | Path, *, running: EngineTarget | None = None) -> Sidecar:
    """Read and verify `<engine>.json` and check that the engine can run here; returns its sidecar.

    running: the machine to check against; None detects it where TensorRT is importable (and needs a GPU
    then), and skips the comparison where it is not (nothing could load the engine there anyway).
    Raises ArtifactError naming each mismatch and how to rebuild.
    """
    engine_path = Path(engine_path)
    sidecar = read_sidecar(engine_path, verify=True)
    if sidecar.kind != "engine":
        raise ArtifactError(f"{engine_path}: sidecar says kind {sidecar.kind!r}, expected a TensorRT engine")
    built = EngineTarget.from_sidecar(sidecar)
    if running is None:
        if tensorrt_version() is None:
            return sidecar
        running = running_target()
    info: dict[str, Any] = sidecar.extra["tensorrt"]
    problems = compatibility_problems(
        built, running, hardware_compat=str(info.get("hardware_compatibility", "none")),
        version_compatible=bool(info.get("version_compatible", False)),
    )
    if problems:
        source = sidecar.parent or "the ONNX graph it came from"
        raise ArtifactError(f"{engine_path} cannot run here: {'; '.join(problems)}; rebuild it on this "
                            f"machine: aarm-export build {source} -o {engine_path} --force")
    return sidecar


def load_trt_runner(engine_path: str | Path) -> Any:
    """Polygraphy `TrtRunner(EngineFromBytes(...))` for an engine that passed `check_engine_compatible`.

    The runner is lazy: use it as a context manager (`with runner: runner.infer({...})`), inputs
    shaped as in the sidecar, e.g. (N, K, C, H, W) with N inside the engine's profile.
    """
    engine_path = Path(engine_path)
    require_tensorrt()
    check_engine_compatible(engine_path)
    from polygraphy.backend.common import BytesFromPath
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    return TrtRunner(EngineFromBytes(BytesFromPath(str(engine_path))), name=engine_path.name)
