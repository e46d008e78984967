"""Spatial transforms of one sample: every frame of it gets the same crop and the same flip.

Input: uint8 (T, H, W, C) numpy frames (C = 3 RGB, or flow with x channels at even and y channels at odd
positions: 2 for one field, 2L for an interleaved stack). Output: float32 torch (T, C, size, size), pixels
scaled to [0, 1] and normalised per channel.

Training (TSN's multi-scale crop): crop height and width each one of scales x the short side (scales
1, .875, .75, .66, the two at most `max_distort` steps apart), at one of five positions (four corners,
centre), resized to size x size; then a horizontal flip with probability 1/2, which for flow also
negates x: in [0, 1] with 0.5 as zero, x -> 1 - x. Evaluation: resize the short side to `scale_size`,
centre crop size x size. Resizing is bilinear (torch, antialiased when shrinking).
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from aarm.errors import ConfigError, DataError

SCALES = (1.0, 0.875, 0.75, 0.66)


@dataclass(frozen=True)
class Crop:
    """A crop box in pixels of the source frame, and whether to flip it."""

    top: int
    left: int
    height: int
    width: int
    flip: bool = False


def _check_frames(frames: np.ndarray) -> None:
    if frames.ndim != 4 or frames.dtype != np.uint8:
        raise DataError(f"expected uint8 frames (T, H, W, C), got {frames.dtype} {tuple(frames.shape)}")


def sample_crop(
    height: int, width: int, size: int, rng: np.random.Generator, *, scales: Sequence[float] = SCALES,
    max_distort: int = 1, flip: bool = True,
) -> Crop:
    """TSN multi-scale crop box (and flip) for a height x width frame."""
    base = min(height, width)
    sizes = [int(base * s) for s in scales]
    sizes = [size if abs(s - size) < 3 else s for s in sizes]
    pairs = [(h, w) for i, h in enumerate(sizes) for j, w in enumerate(sizes) if abs(i - j) <= max_distort]
    crop_h, crop_w = pairs[int(rng.integers(len(pairs)))]
    crop_h, crop_w = min(crop_h, height), min(crop_w, width)
    dy, dx = (height - crop_h) // 4, (width - crop_w) // 4
    positions = [(0, 0), (0, 4 * dx), (4 * dy, 0), (4 * dy, 4 * dx), (2 * dy, 2 * dx)]
    top, left = positions[int(rng.integers(len(positions)))]
    do_flip = bool(rng.random() < 0.5) if flip else False
    return Crop(top, left, crop_h, crop_w, do_flip)


def centre_crop_box(height: int, width: int, size: int) -> Crop:
    if height < size or width < size:
        raise DataError(f"cannot centre-crop {size}x{size} from {height}x{width}")
    return Crop((height - size) // 2, (width - size) // 2, size, size)


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (T, H, W, C) -> float32 (T, C, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255.0)


def resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear resize of (T, C, H, W), antialiased when shrinking."""
    if x.shape[-2:] == (height, width):
        return x
    shrink = height < x.shape[-2] or width < x.shape[-1]
    return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=shrink)


def flip_horizontal(x: torch.Tensor, *, flow: bool) -> torch.Tensor:
    """Mirror (T, C, H, W) left-right; for flow in [0, 1] the x channels (even) become 1 - x."""
    x = x.flip(-1)
    if flow:
        x[:, 0::2] = 1.0 - x[:, 0::2]
    return x


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(x - mean) / std per channel of (T, C, H, W); mean/std of length m repeat over C (a flow stack)."""
    channels = x.shape[1]
    if channels % len(mean) != 0:
        raise ConfigError(f"{len(mean)} mean/std values do not divide {channels} channels")
    reps = channels // len(mean)
    m = torch.tensor(list(mean) * reps, dtype=x.dtype).view(1, channels, 1, 1)
    s = torch.tensor(list(std) * reps, dtype=x.dtype).view(1, channels, 1, 1)
    return (x - m) / s


def train_transform(
    frames: np.ndarray, size: int, rng: np.random.Generator, *, mean: Sequence[float], std: Sequence[float],
    flow: bool = False, scales: Sequence[float] = SCALES, flip: bool = True,
) -> torch.Tensor:
    """Multi-scale crop + flip + normalise: uint8 (T, H, W, C) -> float32 (T, C, size, size)."""
    _check_frames(frames)
    crop = sample_crop(frames.shape[1], frames.shape[2], size, rng, scales=scales, flip=flip)
    return apply_crop(frames, crop, size, mean=mean, std=std, flow=flow)


def apply_crop(
    frames: np.ndarray, crop: Crop, size: int, *, mean: Sequence[float], std: Sequence[float], flow: bool = False
) -> torch.Tensor:
    """Crop, resize to size x size, flip if asked, normalise: uint8 (T, H, W, C) -> float32 (T, C, size, size)."""
    _check_frames(frames)
    patch = frames[:, crop.top : crop.top + crop.height, crop.left : crop.left + crop.width]
    x = resize(to_tensor(patch), size, size)
    if crop.flip:
        x = flip_horizontal(x, flow=flow)
    return normalize(x, mean, std)


def eval_transform(
    frames: np.ndarray, size: int, scale_size: int, *, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """Short side to `scale_size`, centre crop size x size, normalise: uint8 (T, H, W, C) -> (T, C, size, size)."""
    _check_frames(frames)
    h, w = frames.shape[1:3]
    if h <= w:
        new_h, new_w = scale_size, max(scale_size, round(w * scale_size / h))
    else:
        new_h, new_w = max(scale_size, round(h * scale_size / w)), scale_size
    x = resize(to_tensor(frames), new_h, new_w)
    box = centre_crop_box(new_h, new_w, size)
    x = x[:, :, box.top : box.top + size, box.left : box.left + size]
    return normalize(x.contiguous(), mean, std)
