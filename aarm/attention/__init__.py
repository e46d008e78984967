"""Attention modules. Each takes `channels` first; `attention_factory` makes them interchangeable in blocks."""

from collections.abc import Callable
from functools import partial
from typing import Any

from torch import nn

from aarm.attention.aarm_block import FUSIONS, AARMBlock, ParallelFusion
from aarm.attention.cam import CAM
from aarm.attention.cbam import CBAM
from aarm.attention.se import SE
from aarm.attention.stam import STAM, highlighted_map
from aarm.attention.vcm import VCM
from aarm.errors import ConfigError

ATTENTIONS = ("none", "se", "cbam", "aarm")

# Options each attention kind accepts (besides `channels` and `dims`), with the paper's defaults.
ATTENTION_OPTIONS: dict[str, dict[str, Any]] = {
    "none": {},
    "se": {"reduction": 16},
    "cbam": {"reduction": 16},
    "aarm": {"reduction": 16, "alpha": 0.5, "eta": 0.9, "chi": 0.25, "fusion": "parallel"},
}


def attention_factory(kind: str, *, dims: int, **options: Any) -> Callable[[int], nn.Module]:
    """A callable `channels -> module` for one attention kind; `none` gives nn.Identity (no parameters).

    Unknown kinds or options raise ConfigError naming them.
    """
    if kind not in ATTENTIONS:
        raise ConfigError(f"unknown attention {kind!r}; choose one of {', '.join(ATTENTIONS)}")
    unknown = set(options) - set(ATTENTION_OPTIONS[kind])
    if unknown:
        raise ConfigError(f"attention {kind!r} takes no option(s) {', '.join(sorted(unknown))}")
    if kind == "none":
        return lambda channels: nn.Identity()
    cls = {"se": SE, "cbam": CBAM, "aarm": AARMBlock}[kind]
    return partial(cls, dims=dims, **options)


__all__ = [
    "ATTENTIONS",
    "ATTENTION_OPTIONS",
    "AARMBlock",
    "CAM",
    "CBAM",
    "FUSIONS",
    "ParallelFusion",
    "SE",
    "STAM",
    "VCM",
    "attention_factory",
    "highlighted_map",
]
