"""Model registry, TSN / two-stream wrappers and pretrained-weight loading."""

from aarm.models.pretrained import LoadReport, load_pretrained, read_state_dict
from aarm.models.registry import (
    FLOW_STACK,
    MODELS,
    ModelSpec,
    create_model,
    example_input_shape,
    get_spec,
    list_models,
    model_from_config,
)
from aarm.models.tsn import TSN, TwoStream

__all__ = [
    "FLOW_STACK",
    "MODELS",
    "LoadReport",
    "ModelSpec",
    "TSN",
    "TwoStream",
    "create_model",
    "example_input_shape",
    "get_spec",
    "list_models",
    "load_pretrained",
    "model_from_config",
    "read_state_dict",
]
