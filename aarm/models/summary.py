"""Parameter counts for the paper's Table 6 comparison."""

import torch
from torch import nn

from aarm.attention import ATTENTIONS
from aarm.models.registry import FLOW_STACK, create_model, list_models


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def parameter_table(num_classes: int = 101) -> list[dict[str, object]]:
    """One row per (model, attention): parameter counts of the RGB (3-channel) and flow (20-channel) stream."""
    rows: list[dict[str, object]] = []
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        for name in list_models():
            for attention in ATTENTIONS:
                counts = {
                    stream: count_parameters(
                        create_model(name, num_classes=num_classes, attention=attention, in_channels=channels)
                    )
                    for stream, channels in (("rgb", 3), ("flow", 2 * FLOW_STACK))
                }
                rows.append({"model": name, "attention": attention, **counts})
    return rows
