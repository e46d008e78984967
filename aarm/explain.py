"""Attention maps: where (STAM) and on which channels (CAM) an AARM model attends for one input.

    maps = capture_attention(model, x)        # x: one model input (1, K, C, H, W) or (1, C, T, H, W)
    render_png(maps, x, preprocessing, classes, "out.png")

STAM maps come from each stage's last AARM block, CAM weights likewise; the predicted class comes from
the same forward pass. Models without AARM blocks have nothing to show and raise ConfigError.
"""

import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from aarm.attention import AARMBlock
from aarm.data.preprocessing import Preprocessing
from aarm.errors import ConfigError
from aarm.fileio import atomic_path


@dataclass
class AttentionMaps:
    """stam[s]: (views, T', h, w) per stage (T' = 1 for 2D: views are the K snippets); cam[s]: (views, C)."""

    stages: list[str]
    stam: list[np.ndarray]
    cam: list[np.ndarray]
    scores: np.ndarray  # (classes,)


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


def display_frames(x: torch.Tensor, preprocessing: Preprocessing) -> np.ndarray:
    """The sampled frames, de-normalised for display: (F, H, W, 3) float in [0, 1].

    F = K snippets for NKCHW (the first frame, or flow magnitude, of each), T for NCTHW.
    """
    x = x[0].float()
    if preprocessing.layout == "NKCHW":
        frames = x  # (K, C, H, W)
    else:
        frames = x.permute(1, 0, 2, 3)  # (T, C, H, W)
    mean = torch.tensor(preprocessing.mean).repeat(frames.shape[1] // len(preprocessing.mean) + 1)
    std = torch.tensor(preprocessing.std).repeat(frames.shape[1] // len(preprocessing.std) + 1)
    c = frames.shape[1]
    frames = frames * std[:c].view(1, c, 1, 1) + mean[:c].view(1, c, 1, 1)
    if preprocessing.modality == "rgb":
        return frames.clamp(0, 1).permute(0, 2, 3, 1).numpy()
    magnitude = ((frames[:, 0::2] - 0.5) ** 2 + (frames[:, 1::2] - 0.5) ** 2).sqrt().mean(1)
    magnitude = magnitude / magnitude.amax().clamp_min(1e-6)
    return magnitude[..., None].repeat(1, 1, 1, 3).numpy()


def upsample_maps(stam: np.ndarray, frames: int, size: tuple[int, int]) -> np.ndarray:
    """(views, T', h, w) -> (frames, H, W): bilinear in space, nearest in time / over views."""
    t = torch.from_numpy(stam).float()
    t = t.reshape(-1, 1, *t.shape[-2:]) if t.shape[0] > 1 else t[0][:, None]  # (views or T', 1, h, w)
    t = F.interpolate(t, size=size, mode="bilinear", align_corners=False)[:, 0]
    idx = np.minimum((np.arange(frames) * t.shape[0]) // frames, t.shape[0] - 1)
    return t[idx].numpy()


def normalise(heat: np.ndarray) -> np.ndarray:
    """Stretch a stage's maps to [0, 1] over all its frames, so relative attention is visible."""
    lo, hi = float(heat.min()), float(heat.max())
    return (heat - lo) / max(hi - lo, 1e-6)


def _short(stage: str) -> str:
    return stage.replace("backbone.", "").replace(".attn", "")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def render_png(
    maps: AttentionMaps, x: torch.Tensor, preprocessing: Preprocessing, classes: list[str], path: Path,
    title: str = "",
) -> Path:
    """A grid: one row per stage of STAM heatmaps over the sampled frames, then CAM weights per stage."""
    plt = _plt()
    frames = display_frames(x, preprocessing)
    n_frames = min(len(frames), 8)
    pick = np.linspace(0, len(frames) - 1, n_frames).round().astype(int)
    rows = len(maps.stages)
    fig = plt.figure(figsize=(max(1.9 * n_frames, 6.0), 1.9 * rows + 2.6))
    grid = fig.add_gridspec(rows + 1, n_frames, height_ratios=[1] * rows + [1.3])
    axes = np.array([[fig.add_subplot(grid[r, c]) for c in range(n_frames)] for r in range(rows)])
    for r, (stage, stam) in enumerate(zip(maps.stages, maps.stam, strict=True)):
        heat = normalise(upsample_maps(stam, len(frames), frames.shape[1:3]))
        for c, f in enumerate(pick):
            ax = axes[r, c]
            ax.imshow(frames[f])
            ax.imshow(heat[f], cmap="jet", alpha=0.45, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(f"STAM {_short(stage)}", fontsize=7)
            if r == 0:
                ax.set_title(f"frame {f + 1}", fontsize=7)
    cam_ax = fig.add_subplot(grid[rows, :])
    for stage, weights in zip(maps.stages, maps.cam, strict=True):
        w = np.sort(weights.mean(0))[::-1]
        cam_ax.plot(np.linspace(0, 1, len(w)), w, label=f"CAM {_short(stage)} (C={len(w)})")
    cam_ax.set_xlabel("channels, sorted by CAM weight (fraction)")
    cam_ax.set_ylabel("CAM weight")
    cam_ax.set_ylim(0, 1)
    cam_ax.legend(fontsize=6, loc="lower left")
    top = int(maps.scores.argmax())
    probs = torch.softmax(torch.from_numpy(maps.scores), 0)
    heading = f"{title}  predicted: {classes[top]} ({probs[top]:.1%}); STAM maps stretched to [0, 1] per stage"
    # wrapped to the figure's width (about 12 characters of 9 pt text per inch), so no end is cut off
    text = fig.suptitle(textwrap.fill(heading.strip(), width=int(fig.get_figwidth() * 12)), fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - (text.get_text().count("\n") + 1) * 0.16 / fig.get_figheight()))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return Path(path)


def render_gif(
    maps: AttentionMaps, x: torch.Tensor, preprocessing: Preprocessing, classes: list[str], path: Path,
    fps: int = 4,
) -> Path:
    """An animated GIF over the sampled frames: the frame beside it with the last stage's STAM overlay."""
    from PIL import Image

    plt = _plt()
    frames = display_frames(x, preprocessing)
    heat = normalise(upsample_maps(maps.stam[-1], len(frames), frames.shape[1:3]))
    cmap = plt.get_cmap("jet")
    images = []
    for f in range(len(frames)):
        base = frames[f]
        overlay = 0.55 * base + 0.45 * cmap(heat[f])[..., :3]
        both = np.concatenate([base, overlay], axis=1)
        images.append(Image.fromarray((both * 255).astype(np.uint8)).resize((both.shape[1] * 2, both.shape[0] * 2)))
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return Path(path)
