"""Runner backends, and `open_runner`, which opens an artifact on the one its suffix names:

    with open_runner("model.onnx", providers=["cpu"], threads=2) as runner:
        scores = runner.infer({"input": x})["scores"]          # x (N, K, C, H, W) -> (N, num_classes)

`.pt` checkpoints run on PyTorch (`torch_backend`), `.onnx` graphs on onnxruntime's CPU, CUDA or TensorRT
provider (`onnxruntime_backend`), `.engine` files on TensorRT through Polygraphy (`tensorrt_backend`). The
backend reads the sidecar (verified against the file's sha256) and refuses one that does not describe the graph
beside it. Backend modules are imported on demand, so `import runtime` needs no optional package.
"""

from collections.abc import Sequence
from importlib import import_module
from pathlib import Path
from typing import Any

from aarm.errors import ConfigError
from runtime.errors import ArtifactError
from runtime.runner import Runner

# backend -> (module, Runner subclass, artifact suffixes, other names it answers to)
BACKENDS: dict[str, tuple[str, str, tuple[str, ...], tuple[str, ...]]] = {
    "torch": ("runtime.backends.torch_backend", "TorchRunner", (".pt", ".pth"), ("pytorch",)),
    "onnxruntime": ("runtime.backends.onnxruntime_backend", "OnnxRuntimeRunner", (".onnx",), ("ort", "onnx")),
    "tensorrt": ("runtime.backends.tensorrt_backend", "TensorRTRunner", (".engine", ".plan"), ("trt",)),
}


def runner_class(backend: str) -> Any:
    """The Runner subclass of a backend (torch | onnxruntime | tensorrt), imported now."""
    module, name, _, _ = BACKENDS[backend]
    return getattr(import_module(module), name)


def resolve_backend(artifact: str | Path, backend: str | None = None) -> str:
    """The backend for an artifact: named explicitly, or from its suffix (.pt / .onnx / .engine)."""
    path = Path(artifact)
    by_suffix = next((b for b, (_, _, suffixes, _) in BACKENDS.items() if path.suffix.lower() in suffixes), None)
    if backend is None:
        if by_suffix is None:
            raise ArtifactError(f"{path}: unknown artifact type {path.suffix!r}; expected .pt, .onnx or .engine")
        return by_suffix
    name = next((b for b, (_, _, _, aliases) in BACKENDS.items() if backend.lower() in aliases), backend.lower())
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if by_suffix is not None and by_suffix != name:
        raise ConfigError(f"{path}: a {path.suffix} artifact runs on {by_suffix}, not {name}")
    return name


def open_runner(
    artifact: str | Path,
    *,
    backend: str | None = None,
    providers: Sequence[str] | None = None,
    device: str | None = None,
    threads: int | None = None,
    inter_threads: int | None = None,
    **options: Any,
) -> Runner:
    """Open an artifact for inference (not yet active).

    backend: torch | onnxruntime | tensorrt (default: from the suffix). providers (onnxruntime): execution
    providers in priority order, short names cpu / cuda / tensorrt or full names; a requested provider that
    does not start raises BackendUnavailable. device: "cpu" or "cuda[:i]" (torch; for onnxruntime "cuda"
    means the CUDA provider; for TensorRT the engine's GPU, default cuda:0). threads / inter_threads: intra-/
    inter-op threads. options: backend-specific (onnxruntime: `optimization` all|extended|basic|disable,
    `provider_options`; tensorrt: `allow_host_code` for a version-compatible engine you built yourself).
    """
    name = resolve_backend(artifact, backend)
    cls = runner_class(name)
    if name == "torch":
        if providers:
            raise ConfigError("execution providers apply to onnxruntime; for PyTorch pass device=")
        return cls.from_checkpoint(artifact, device=device or "cpu", threads=threads, **options)
    if name == "onnxruntime":
        if providers is None and device is not None:
            providers = ["cuda" if device.startswith("cuda") else "cpu"]
            if device.startswith("cuda:"):
                options.setdefault("provider_options", {}).setdefault("device_id", int(device.split(":")[1]))
        return cls.from_artifact(artifact, providers=providers, threads=threads, inter_threads=inter_threads,
                                 **options)
    if providers or threads or inter_threads:
        raise ConfigError("providers and thread counts do not apply to TensorRT engines")
    return cls.from_engine(artifact, device=device, **options)

