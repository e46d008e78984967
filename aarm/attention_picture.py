"""Attention pictures without PyTorch: STAM heatmaps over the sampled frames and CAM weight curves.

    maps = AttentionMaps(stages, stam, cam, scores)        # from PyTorch hooks (aarm.explain) or graph outputs
    render_png(maps, x, preprocessing, classes, "out.png")  # x: the model input (1, K, C, H, W) or (1, C, T, H, W)

Only numpy, Pillow and matplotlib: the same drawing serves `aarm-export explain` (a checkpoint) and
`aarm-export predict --explain` (an ONNX graph or engine whose attention outputs carry the maps), where
PyTorch need not be installed. Graph outputs: STAM maps as (N, V, T', h, w), layout `STAM_LAYOUT`, CAM
weights as (N, V, C), layout `CAM_LAYOUT`; V = K snippets and T' = 1 for 2D (TSN) models, V = 1 for 3D.
"""

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aarm.data.preprocessing import Preprocessing
from aarm.errors import ConfigError
from aarm.fileio import atomic_path

STAM_LAYOUT = "NVTHW"  # STAM map per view and time step: (N, V, T', h, w)
CAM_LAYOUT = "NVC"  # CAM channel weights per view: (N, V, C)
STAM_PREFIX = "stam."
CAM_PREFIX = "cam."


@dataclass
class AttentionMaps:
    """stam[s]: (views, T', h, w) per stage (T' = 1 for 2D: views are the K snippets); cam[s]: (views, C)."""

    stages: list[str]
    stam: list[np.ndarray]
    cam: list[np.ndarray]
    scores: np.ndarray  # (classes,)


def short_stage(stage: str) -> str:
    """A module path as pictures and graph output names show it: backbone.layer3.1.attn -> layer3.1."""
    return stage.replace("backbone.", "").replace(".attn", "")


def output_names(stage: str) -> tuple[str, str]:
    """The graph outputs of one stage's maps: ("stam.<stage>", "cam.<stage>")."""
    return STAM_PREFIX + short_stage(stage), CAM_PREFIX + short_stage(stage)


def maps_from_outputs(outputs: Mapping[str, np.ndarray], layouts: Mapping[str, str | None], index: int = 0,
                      scores: str = "scores") -> AttentionMaps:
    """The maps of sample `index` from a graph's outputs {name: (N, ...)}; `layouts` maps each output name to
    its sidecar layout. Stages in output order; every STAM output needs its CAM output. ConfigError when the
    outputs hold no attention maps."""
    stam = [n for n, lay in layouts.items() if lay == STAM_LAYOUT and n.startswith(STAM_PREFIX)]
    if not stam:
        raise ConfigError("the graph has no attention outputs; export it with `attention_outputs`")
    stages, stam_maps, cam_maps = [], [], []
    for name in stam:
        stage = name[len(STAM_PREFIX):]
        cam = CAM_PREFIX + stage
        if layouts.get(cam) != CAM_LAYOUT or cam not in outputs or name not in outputs:
            raise ConfigError(f"attention output {name!r} has no matching {cam!r} ({CAM_LAYOUT}) output")
        stages.append(stage)
        stam_maps.append(np.asarray(outputs[name][index], dtype=np.float32))
        cam_maps.append(np.asarray(outputs[cam][index], dtype=np.float32))
    return AttentionMaps(stages=stages, stam=stam_maps, cam=cam_maps,
                         scores=np.asarray(outputs[scores][index], dtype=np.float32))


def display_frames(x: Any, preprocessing: Preprocessing) -> np.ndarray:
    """The sampled frames, de-normalised for display: (F, H, W, 3) float in [0, 1].

    x: one model input (1, K, C, H, W) or (1, C, T, H, W), a numpy array or a CPU tensor. F = K snippets for
    NKCHW (the first frame, or flow magnitude, of each), T for NCTHW.
    """
    x = np.asarray(x[0], dtype=np.float32)
    frames = x if preprocessing.layout == "NKCHW" else x.transpose(1, 0, 2, 3)  # (F, C, H, W)
    c = frames.shape[1]
    mean = np.resize(np.asarray(preprocessing.mean, np.float32), c).reshape(1, c, 1, 1)
    std = np.resize(np.asarray(preprocessing.std, np.float32), c).reshape(1, c, 1, 1)
    frames = frames * std + mean
    if preprocessing.modality == "rgb":
        return np.clip(frames, 0, 1).transpose(0, 2, 3, 1)
    magnitude = np.sqrt((frames[:, 0::2] - 0.5) ** 2 + (frames[:, 1::2] - 0.5) ** 2).mean(1)
    magnitude = magnitude / max(float(magnitude.max()), 1e-6)
    return np.repeat(magnitude[..., None], 3, axis=-1)


def upsample_maps(stam: np.ndarray, frames: int, size: tuple[int, int]) -> np.ndarray:
    """(views, T', h, w) -> (frames, H, W): bilinear in space (Pillow, half-pixel centres), nearest in time /
    over views."""
    from PIL import Image

    maps = np.asarray(stam, dtype=np.float32)
    maps = maps.reshape(-1, *maps.shape[-2:]) if maps.shape[0] > 1 else maps[0]  # (views or T', h, w)
    height, width = size
    big = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(m)).resize(
        (width, height), Image.Resampling.BILINEAR)) for m in maps])
    idx = np.minimum((np.arange(frames) * big.shape[0]) // frames, big.shape[0] - 1)
    return big[idx]


def normalise(heat: np.ndarray) -> np.ndarray:
    """Stretch a stage's maps to [0, 1] over all its frames, so relative attention is visible."""
    lo, hi = float(heat.min()), float(heat.max())
    return (heat - lo) / max(hi - lo, 1e-6)


def _softmax(scores: np.ndarray) -> np.ndarray:
    z = np.asarray(scores, dtype=np.float64)
    e = np.exp(z - z.max())
    return e / e.sum()


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def render_png(
    maps: AttentionMaps, x: Any, preprocessing: Preprocessing, classes: Sequence[str], path: Path,
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
                ax.set_ylabel(f"STAM {short_stage(stage)}", fontsize=7)
            if r == 0:
                ax.set_title(f"frame {f + 1}", fontsize=7)
    cam_ax = fig.add_subplot(grid[rows, :])
    for stage, weights in zip(maps.stages, maps.cam, strict=True):
        w = np.sort(weights.mean(0))[::-1]
        cam_ax.plot(np.linspace(0, 1, len(w)), w, label=f"CAM {short_stage(stage)} (C={len(w)})")
    cam_ax.set_xlabel("channels, sorted by CAM weight (fraction)")
    cam_ax.set_ylabel("CAM weight")
    cam_ax.set_ylim(0, 1)
    cam_ax.legend(fontsize=6, loc="lower left")
    top = int(maps.scores.argmax())
    probs = _softmax(maps.scores)
    heading = f"{title}  predicted: {classes[top]} ({probs[top]:.1%}); STAM maps stretched to [0, 1] per stage"
    # wrapped to the figure's width (about 12 characters of 9 pt text per inch), so no end is cut off
    text = fig.suptitle(textwrap.fill(heading.strip(), width=int(fig.get_figwidth() * 12)), fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - (text.get_text().count("\n") + 1) * 0.16 / fig.get_figheight()))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return Path(path)


def render_gif(
    maps: AttentionMaps, x: Any, preprocessing: Preprocessing, classes: Sequence[str], path: Path,
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
