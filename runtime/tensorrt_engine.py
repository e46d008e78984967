"""TensorRT engines at run time: is this engine usable here, and a Polygraphy runner for it.

A serialized engine only deserializes on the TensorRT version and GPU it was built for, unless it was
built version-compatible (any later TensorRT of the same major version) or hardware-compatible
(`ampere+`: any GPU of compute capability 8.0 or newer; `same-cc`: any GPU of the same compute
capability). `aarm-export build` records the TensorRT version, GPU name and compute capability and
those two options in the engine's sidecar under `extra["tensorrt"]`; `check_engine_compatible` compares
them with the running machine before TensorRT gets a chance to fail with a less helpful message.

Devices follow the runners' one convention, "cuda" or "cuda:<i>" (`cuda_device_index`): the engine is
deserialized on that GPU and every call runs with its primary context current (`use_cuda_device`).
Engines are deserialized through this module's own `trt.Runtime` with host code off (an engine is untrusted
input, and a version-compatible one embeds native code: refused unless the caller allows host code). Only
public API is used: TensorRT's `Runtime` and `ICudaEngine` getters, Polygraphy's `TrtRunner`, and the CUDA
driver API. Polygraphy before `MIN_POLYGRAPHY` is refused (`require_polygraphy`).

`tensorrt` is imported lazily inside functions: importing this module works on a CPU-only machine.
"""

import ctypes
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from aarm.errors import BackendUnavailable, ConfigError
from runtime.artifact import Sidecar, read_sidecar
from runtime.errors import ArtifactError

INSTALL_HINT = (
    "install TensorRT's Python bindings: `pip install tensorrt` (NVIDIA's wheels on PyPI, "
    "extra index https://pypi.nvidia.com) on an x86-64/SBSA machine with an NVIDIA driver, "
    "or the python3-libnvinfer package that JetPack ships on Jetson"
)
HARDWARE_COMPAT = ("none", "ampere+", "same-cc")
# Polygraphy before 0.49.6 sets the EXPLICIT_BATCH network flag on every TensorRT, and TensorRT 11 removed
# it (its CHANGELOG, v0.49.6); PyPI's releases jump from 0.49.0 to 0.49.9, the first with the fix.
MIN_POLYGRAPHY = "0.49.9"

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
                                "rebuild the engine with `build_engine`")
        return cls(str(info["version"]), str(info["gpu"]), str(info["compute_capability"]))


def require_tensorrt() -> ModuleType:
    """The `tensorrt` module, or BackendUnavailable saying how to install it."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable(f"TensorRT is not available here ({exc}); {INSTALL_HINT}") from None
    return trt


def require_polygraphy(version: str | None = None) -> str:
    """Polygraphy's version, or BackendUnavailable when it is missing or older than MIN_POLYGRAPHY.

    version: the version to judge (None reads the installed `polygraphy.__version__`).
    """
    if version is None:
        try:
            import polygraphy
        except ImportError as exc:
            raise BackendUnavailable(f"Polygraphy is not available here ({exc}); "
                                     f"pip install 'polygraphy>={MIN_POLYGRAPHY}'") from None
        version = str(polygraphy.__version__)
    if _version_tuple(version, what="Polygraphy") < _version_tuple(MIN_POLYGRAPHY):
        raise BackendUnavailable(f"Polygraphy {version} is too old: it sets the EXPLICIT_BATCH flag that TensorRT "
                                 f"11 removed; pip install -U 'polygraphy>={MIN_POLYGRAPHY}'")
    return version


def cuda_device_index(device: str | None) -> int:
    """The GPU index of a runner device "cuda" or "cuda:<i>" (None: 0); "cpu" or anything else is a ConfigError."""
    if device is None or device == "cuda":
        return 0
    prefix, _, index = device.partition(":")
    if prefix != "cuda" or not index.isdigit():
        raise ConfigError(f"TensorRT engines run on a GPU; device must be cuda or cuda:<i>, got {device!r}")
    return int(index)


def tensorrt_version() -> str | None:
    """The importable TensorRT's version, or None where `import tensorrt` fails (`require_tensorrt` says why)."""
    try:
        return str(require_tensorrt().__version__)
    except BackendUnavailable:
        return None


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


_PRIMARY_CONTEXTS: dict[int, ctypes.c_void_p] = {}


def use_cuda_device(device: int = 0) -> None:
    """Make GPU `device`'s primary context current on the calling thread (the CUDA runtime, and so TensorRT,
    then allocates and runs there). The context is retained once per process and kept."""
    lib = _cuda_driver()
    ctx = _PRIMARY_CONTEXTS.get(device)
    if ctx is None:
        dev = ctypes.c_int()
        ctx = ctypes.c_void_p()
        for status, call in ((lambda: lib.cuInit(0), "cuInit"),
                             (lambda: lib.cuDeviceGet(ctypes.byref(dev), device), f"cuDeviceGet({device})"),
                             (lambda: lib.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev),
                              "cuDevicePrimaryCtxRetain")):
            code = status()
            if code != 0:
                raise BackendUnavailable(f"CUDA driver call {call} failed with CUresult {code}; is GPU {device} "
                                         "visible?")
        _PRIMARY_CONTEXTS[device] = ctx
    code = lib.cuCtxSetCurrent(ctx)
    if code != 0:
        raise BackendUnavailable(f"CUDA driver call cuCtxSetCurrent failed with CUresult {code} on GPU {device}")


def running_target(device: int = 0) -> EngineTarget:
    """TensorRT version and GPU `device` of this machine (BackendUnavailable when either is missing)."""
    trt = require_tensorrt()
    gpu, cc = current_gpu(device)
    return EngineTarget(str(trt.__version__), gpu, cc)


def _version_tuple(version: str, what: str = "TensorRT") -> tuple[int, ...]:
    parts = []
    for piece in version.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    if not parts:
        raise ArtifactError(f"unreadable {what} version {version!r}")
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
                        f"rebuild with `hardware_compat` same-cc to share one engine)")
    return problems


def check_engine_compatible(engine_path: str | Path, *, running: EngineTarget | None = None,
                            device: int = 0) -> Sidecar:
    """Read and verify `<engine>.json` and check that the engine can run here; returns its sidecar.

    running: the machine to check against; None detects it (GPU `device`) where TensorRT is importable (and
    needs a GPU then), and skips the comparison where it is not (nothing could load the engine there anyway).
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
        running = running_target(device)
    info: dict[str, Any] = sidecar.extra["tensorrt"]
    problems = compatibility_problems(
        built, running, hardware_compat=str(info.get("hardware_compatibility", "none")),
        version_compatible=bool(info.get("version_compatible", False)),
    )
    if problems:
        source = sidecar.parent or "the ONNX graph it came from"
        raise ArtifactError(f"{engine_path} cannot run here: {'; '.join(problems)}; rebuild it from {source} on "
                            "this machine")
    return sidecar


def version_compatible_refusal(engine_path: str | Path, sidecar: Sidecar) -> str | None:
    """Why `engine_path` may not be deserialized with host code off (None when it may).

    A version-compatible engine carries TensorRT's lean runtime as native code and only deserializes with
    host code allowed; the sidecar saying so is untrusted, so it is refused unless the caller opts in.
    """
    info = sidecar.extra.get("tensorrt")
    if isinstance(info, dict) and bool(info.get("version_compatible", False)):
        source = sidecar.parent or "the ONNX graph it came from"
        return (f"{engine_path} is a version-compatible engine, which runs native code embedded in it; "
                f"rebuild it from {source} without `version_compat` or, for an engine you built yourself, open it "
                "with allow_host_code=True")
    return None


def deserialize_engine(data: bytes, *, trt: ModuleType | Any | None = None, allow_host_code: bool = False,
                       name: str = "engine") -> Any:
    """The `trt.ICudaEngine` of a serialized plan, through this module's own `trt.Runtime`.

    Host code stays off unless `allow_host_code` (Polygraphy's `EngineFromBytes` always turns it on, which lets
    any engine run the lean-runtime code embedded in it). TensorRT's own plugins are registered first.
    trt: the tensorrt module (None imports it). Raises ArtifactError when TensorRT cannot deserialize it.
    """
    trt = trt if trt is not None else require_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")
    trt_runtime = trt.Runtime(logger)
    trt_runtime.engine_host_code_allowed = bool(allow_host_code)
    cuda_engine = trt_runtime.deserialize_cuda_engine(data)
    if not cuda_engine:
        hint = "" if allow_host_code else " (host code is off: a version-compatible engine needs allow_host_code)"
        raise ArtifactError(f"{name}: TensorRT could not deserialize the engine{hint}; see TensorRT's log above")
    return cuda_engine


def load_engine(engine_path: str | Path, *, device: int = 0, allow_host_code: bool = False) -> Any:
    """The deserialized `trt.ICudaEngine` of an engine that passes `check_engine_compatible`, on GPU `device`.

    Deserialized by `deserialize_engine` on that GPU's primary context, with host code off; a version-compatible
    engine (its sidecar says so) is refused unless `allow_host_code` (it needs the code embedded in it).
    """
    engine_path = Path(engine_path)
    trt = require_tensorrt()
    require_polygraphy()
    sidecar = check_engine_compatible(engine_path, device=device)
    refusal = version_compatible_refusal(engine_path, sidecar)
    if refusal is not None and not allow_host_code:
        raise ArtifactError(refusal)
    use_cuda_device(device)
    return deserialize_engine(engine_path.read_bytes(), trt=trt, allow_host_code=allow_host_code,
                              name=str(engine_path))


def engine_io(
    engine: Any, trt: ModuleType | Any | None = None
) -> tuple[list[tuple[str, list[int], str]], list[str], dict[str, list[int]]]:
    """(inputs [(name, shape with -1 for dynamic axes, numpy dtype name)], output names, {output: shape}) of a
    `trt.ICudaEngine`, in binding order, through TensorRT's public getters (dtypes mapped by Polygraphy's
    DataType). trt: the tensorrt module (None imports it)."""
    from polygraphy.datatype import DataType
    from polygraphy.exception import PolygraphyException

    trt = trt if trt is not None else require_tensorrt()
    inputs, outputs, output_shapes = [], [], {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
            trt_dtype = engine.get_tensor_dtype(name)
            try:
                dtype = DataType.to_dtype(DataType.from_dtype(trt_dtype), "numpy")
            except PolygraphyException:
                dtype = None
            if dtype is None:
                raise ArtifactError(f"engine input {name!r} has type {trt_dtype}, which numpy cannot hold")
            inputs.append((name, [int(d) for d in engine.get_tensor_shape(name)], np.dtype(dtype).name))
        else:
            outputs.append(name)
            output_shapes[name] = [int(d) for d in engine.get_tensor_shape(name)]
    return inputs, outputs, output_shapes
