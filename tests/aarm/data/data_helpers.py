"""Helpers that write tiny videos and frame folders for the data tests."""

from pathlib import Path

import numpy as np
from PIL import Image

from aarm.data.synthetic import pick_codec, write_video


def gray_video(path: Path, levels: list[int], size: tuple[int, int] = (32, 48)) -> Path:
    """A video whose frame i is a flat gray of levels[i] (H, W = size)."""
    frames = np.stack([np.full((*size, 3), v, np.uint8) for v in levels])
    write_video(path, frames, pick_codec()[0])
    return path


def moving_square_video(path: Path, frames: int = 6, size: int = 32, step: int = 2) -> Path:
    """A textured square moving right by `step` px per frame over a textured static background."""
    rng = np.random.default_rng(0)
    bg = (rng.random((size, size, 1)) * 60 + 60).repeat(3, axis=2).astype(np.uint8)
    tex = (rng.random((10, 10, 1)) * 155 + 100).repeat(3, axis=2).astype(np.uint8)
    out = []
    for t in range(frames):
        f = bg.copy()
        x = 4 + step * t
        f[11:21, x : x + 10] = tex
        out.append(f)
    write_video(path, np.stack(out), pick_codec()[0])
    return path


def write_frame_folder(folder: Path, rgb: int = 0, flows: int = 0, size: tuple[int, int] = (24, 32)) -> Path:
    """TSN frame folder: `rgb` frames img_%05d.jpg of gray 10 * i and `flows` x/y pairs of gray 100 + i / 150 + i."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, rgb + 1):
        Image.fromarray(np.full((*size, 3), 10 * i, np.uint8)).save(folder / f"img_{i:05d}.jpg", quality=100)
    for i in range(1, flows + 1):
        Image.fromarray(np.full(size, 100 + i, np.uint8)).save(folder / f"flow_x_{i:05d}.jpg", quality=100)
        Image.fromarray(np.full(size, 150 + i, np.uint8)).save(folder / f"flow_y_{i:05d}.jpg", quality=100)
    return folder
