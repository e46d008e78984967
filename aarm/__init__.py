"""AARM: Action Attention Recalibration Module (Li et al., ACML 2020), models in PyTorch.

    import aarm
    model = aarm.create_model("resnet50", num_classes=101, attention="aarm")   # TSN, (N, 3, 3, 224, 224)
    aarm.load_pretrained(model, "resnet50-imagenet.pth")                        # torchvision layout
"""

from aarm.errors import AarmError, BackendUnavailable, CheckpointError, ConfigError, DataError
from aarm.models import (
    TSN,
    LoadReport,
    TwoStream,
    create_model,
    example_input_shape,
    list_models,
    load_pretrained,
    model_from_config,
)

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
