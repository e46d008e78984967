"""AARM: Action Attention Recalibration Module (Li et al., ACML 2020), models in PyTorch.

    import aarm
    model = aarm.create_model("resnet50", num_classes=101, attention="aarm")   # TSN, (N, 3, 3, 224, 224)
    aarm.load_pretrained(model, "resnet50-imagenet.pth")                        # torchvision layout
"""

from importlib import import_module
from typing import Any

from aarm.errors import AarmError, BackendUnavailable, CheckpointError, ConfigError, DataError

# The models, and PyTorch with them, load on first use: the torch-free modules (aarm.errors, aarm.fileio,
# aarm.data.preprocessing, aarm.attention_picture) import without PyTorch, for runtimes that run ONNX graphs
# or engines (`aarm-export predict --explain`).
_FROM_MODELS = ("TSN", "LoadReport", "TwoStream", "create_model", "example_input_shape", "list_models",
                "load_pretrained", "model_from_config")


def __getattr__(name: str) -> Any:
    if name == "models":
        return import_module("aarm.models")
    if name in _FROM_MODELS:
        return getattr(import_module("aarm.models"), name)
    raise AttributeError(f"module 'aarm' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "AarmError",
    "BackendUnavailable",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "LoadReport",
    "TSN",
    "TwoStream",
    "create_model",
    "example_input_shape",
    "list_models",
    "load_pretrained",
    "model_from_config",
]
