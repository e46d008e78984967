"""Runner backends. Each is imported on demand so that `import runtime` needs no optional package:

- `torch_backend.TorchRunner`: a checkpoint or nn.Module in PyTorch eager, CPU or CUDA.
- `onnxruntime_backend.OnnxRuntimeRunner`: an ONNX graph on onnxruntime's CPU, CUDA or TensorRT provider.
- `tensorrt_backend.TensorRTRunner`: a TensorRT engine through Polygraphy's TrtRunner.
"""

from importlib import import_module
from typing import Any

_MODULES = {
    "torch": ("runtime.backends.torch_backend", "TorchRunner"),
    "onnxruntime": ("runtime.backends.onnxruntime_backend", "OnnxRuntimeRunner"),
    "tensorrt": ("runtime.backends.tensorrt_backend", "TensorRTRunner"),
}


def runner_class(backend: str) -> Any:
    """The Runner subclass of a backend (torch | onnxruntime | tensorrt), imported now."""
    module, name = _MODULES[backend]
    return getattr(import_module(module), name)


__all__ = ["runner_class"]
