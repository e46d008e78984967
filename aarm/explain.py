"""Attention maps: where (STAM) and on which channels (CAM) an AARM model attends for one input.

    maps = capture_attention(model, x)        # x: one model input (1, K, C, H, W) or (1, C, T, H, W)
    render_png(maps, x, preprocessing, classes, "out.png")

STAM maps come from each stage's last AARM block, CAM weights likewise; the predicted class comes from
the same forward pass. Models without AARM blocks have nothing to show and raise ConfigError.
`WithAttentionOutputs` returns the same maps batched, beside the scores, for an ONNX export whose graph
carries them as extra outputs; the drawing lives in `aarm.attention_picture` (no PyTorch needed there).
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from aarm.attention import AARMBlock
from aarm.attention_picture import (
    CAM_LAYOUT,
    STAM_LAYOUT,
    AttentionMaps,
    display_frames,
    normalise,
    output_names,
    render_gif,
    render_png,
    upsample_maps,
)
from aarm.errors import ConfigError

__all__ = ["CAM_LAYOUT", "STAM_LAYOUT", "AttentionMaps", "WithAttentionOutputs", "attention_output_names",
           "capture_attention", "display_frames", "normalise", "record_attention", "render_gif", "render_png",
           "upsample_maps"]


def _stage_blocks(model: nn.Module) -> list[tuple[str, AARMBlock]]:
    """The last AARM block of each stage (ResNet layerX, VGG/C3D stage index)."""
    by_stage: dict[str, tuple[str, AARMBlock]] = {}
    for name, module in model.named_modules():
        if isinstance(module, AARMBlock):
            parts = name.split(".")
            stage = next((p for p in parts if p.startswith("layer")), None) or ".".join(parts[-2:])
            by_stage[stage] = (name, module)
    if not by_stage:
        raise ConfigError("this model has no AARM blocks to explain (attention must be 'aarm')")
    return list(by_stage.values())


@torch.no_grad()
def capture_attention(model: nn.Module, x: torch.Tensor) -> AttentionMaps:
    """Run `model` (eval) on one input x (1, ...) and collect STAM maps and CAM weights per stage."""
    if x.shape[0] != 1:
        raise ConfigError(f"explain takes one input (batch 1), got batch {x.shape[0]}")
    blocks = _stage_blocks(model)
    stam: dict[str, torch.Tensor] = {}
    cam: dict[str, torch.Tensor] = {}
    hooks = []
    for name, block in blocks:
        hooks.append(block.stam.register_forward_hook(lambda m, i, o, n=name: stam.__setitem__(n, o)))
        hooks.append(block.cam.register_forward_hook(lambda m, i, o, n=name: cam.__setitem__(n, o)))
    try:
        scores = model.eval()(x)[0]
    finally:
        for h in hooks:
            h.remove()
    names = [n for n, _ in blocks]
    stam_maps = []
    for n in names:
        m = stam[n][:, 0]  # (views, h, w) for 2D, (1, t, h, w) for 3D
        stam_maps.append((m[:, None] if m.dim() == 3 else m).cpu().numpy())
    return AttentionMaps(
        stages=names,
        stam=stam_maps,
        cam=[cam[n].flatten(1).cpu().numpy() for n in names],
        scores=scores.cpu().numpy(),
    )


# ------------------------------------------------------------------------------------ batched, for export


def attention_output_names(model: nn.Module) -> list[str]:
    """The extra outputs `WithAttentionOutputs` adds, in order: "stam.<stage>", "cam.<stage>" per stage
    (stage: the module path of each stage's last AARM block, e.g. "layer3.1" for backbone.layer3.1.attn)."""
    return [name for stage, _ in _stage_blocks(model) for name in output_names(stage)]


def _stam_views(stam: torch.Tensor, views: int) -> torch.Tensor:
    """STAM output (N*V, 1, h, w) (2D) -> (N, V, 1, h, w); (N, 1, t, h, w) (3D, V = 1) is already in that layout
    (no reshape over a dynamic T, which torch.export would have to guard)."""
    return stam if stam.dim() == 5 else stam.reshape(-1, views, 1, *stam.shape[2:])


def _cam_views(cam: torch.Tensor, views: int) -> torch.Tensor:
    """CAM output (N*V, C, 1, 1) (2D) -> (N, V, C); (N, C, 1, 1, 1) (3D, V = 1) -> (N, 1, C)."""
    return cam.flatten(1).unsqueeze(1) if views == 1 else cam.reshape(-1, views, cam.shape[1])


@contextmanager
def record_attention(model: nn.Module, views: int) -> Iterator[dict[str, torch.Tensor]]:
    """While open, every forward of `model` fills the yielded dict with its maps, batched in the graph
    layouts: "stam.<stage>" (N, V, T', h, w) and "cam.<stage>" (N, V, C); V = views (K snippets for a 2D TSN
    model, 1 for 3D). Single-input models only."""
    blocks = _stage_blocks(model)
    found: dict[str, torch.Tensor] = {}
    hooks = []
    for stage, block in blocks:
        stam_name, cam_name = output_names(stage)
        hooks.append(block.stam.register_forward_hook(
            lambda m, i, o, n=stam_name: found.__setitem__(n, _stam_views(o, views))))
        hooks.append(block.cam.register_forward_hook(
            lambda m, i, o, n=cam_name: found.__setitem__(n, _cam_views(o, views))))
    try:
        yield found
    finally:
        for h in hooks:
            h.remove()


class WithAttentionOutputs(nn.Module):
    """`model` whose forward returns (scores, *maps): scores (N, classes), then per stage the STAM maps
    (N, V, T', h, w) and CAM weights (N, V, C), named by `attention_output_names(model)`.

    Input (N, K, C, H, W) (2D TSN: V = K) or (N, C, T, H, W) (3D: V = 1). TwoStream models are refused
    (ConfigError): which stream's maps to draw is not defined."""

    def __init__(self, model: nn.Module, layout: str) -> None:
        super().__init__()
        from aarm.models.tsn import TwoStream

        if isinstance(model, TwoStream):
            raise ConfigError("attention outputs take a single-stream model; export each stream of a two-stream "
                              "model on its own")
        self.model = model
        self.layout = layout
        self.names = attention_output_names(model)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        views = x.shape[1] if self.layout == "NKCHW" else 1
        with record_attention(self.model, views) as found:
            scores = self.model(x)
        return (scores, *(found[n] for n in self.names))
