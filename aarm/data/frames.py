"""Pre-extracted frame folders in the TSN convention, one folder per video:

    img_00001.jpg, img_00002.jpg, ...        RGB frames, 1-based
    flow_x_00001.jpg, flow_y_00001.jpg, ...  optical flow between frame i and i+1, one gray JPEG per axis,
                                             quantised so gray 128 is zero motion (see aarm.data.flow)

Readers take 0-based indices (index i reads file number i + 1) and return uint8 arrays; a flow gray value
v means v / 255 in [0, 1] once the transforms scale it (0.5 is zero motion).
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from aarm.errors import DataError

RGB_TEMPLATE = "img_{:05d}.jpg"
FLOW_X_TEMPLATE = "flow_x_{:05d}.jpg"
FLOW_Y_TEMPLATE = "flow_y_{:05d}.jpg"


def is_frame_folder(path: Path) -> bool:
    """True for a folder holding TSN-style frames or flow fields."""
    path = Path(path)
    return path.is_dir() and ((path / RGB_TEMPLATE.format(1)).is_file() or (path / FLOW_X_TEMPLATE.format(1)).is_file())


def _count(folder: Path, prefix: str) -> int:
    return sum(1 for p in folder.iterdir() if p.name.startswith(prefix) and p.name.endswith(".jpg"))


def frame_folder_count(folder: Path, modality: str = "rgb") -> int:
    """Number of RGB frames (`img_*.jpg`) or flow fields (`flow_x_*.jpg` paired with `flow_y_*.jpg`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"frame folder {folder} not found")
    if modality == "rgb":
        n = _count(folder, "img_")
        if n == 0:
            raise DataError(f"frame folder {folder} holds no RGB frames (img_00001.jpg, ...)")
        return n
    nx, ny = _count(folder, "flow_x_"), _count(folder, "flow_y_")
    if nx == 0:
        raise DataError(f"frame folder {folder} holds no flow fields (flow_x_00001.jpg, ...)")
    if nx != ny:
        raise DataError(f"frame folder {folder} holds {nx} flow_x but {ny} flow_y images")
    return nx


def _read_jpeg(path: Path, mode: str) -> np.ndarray:
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert(mode))
    except FileNotFoundError:
        raise DataError(f"frame {path} not found") from None
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"cannot read frame {path}: {exc}") from exc


def _read_many(folder: Path, templates: Sequence[str], indices: Sequence[int], mode: str) -> np.ndarray:
    """(T, H, W, len(templates) * channels) uint8; each distinct file read once."""
    cache: dict[int, np.ndarray] = {}
    out = []
    for i in indices:
        i = int(i)
        if i < 0:
            raise DataError(f"negative frame index {i} for {folder}")
        if i not in cache:
            parts = [_read_jpeg(folder / t.format(i + 1), mode) for t in templates]
            parts = [p[..., None] if p.ndim == 2 else p for p in parts]
            if any(p.shape[:2] != parts[0].shape[:2] for p in parts):
                raise DataError(f"frames {i + 1} of {folder} differ in size")
            cache[i] = np.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]
        out.append(cache[i])
    if not out:
        raise DataError(f"no frame indices given for {folder}")
    if any(o.shape != out[0].shape for o in out):
        raise DataError(f"frames of {folder} differ in size")
    return np.stack(out)


def read_rgb_frames(folder: Path, indices: Sequence[int]) -> np.ndarray:
    """RGB frames `indices` (0-based) of a frame folder: (T, H, W, 3) uint8."""
    return _read_many(Path(folder), [RGB_TEMPLATE], indices, "RGB")


def read_flow_frames(folder: Path, indices: Sequence[int]) -> np.ndarray:
    """Flow fields `indices` (0-based) of a frame folder: (T, H, W, 2) uint8, channel 0 = x, 1 = y."""
    return _read_many(Path(folder), [FLOW_X_TEMPLATE, FLOW_Y_TEMPLATE], indices, "L")


def interleave_flow(flows: np.ndarray) -> np.ndarray:
    """(..., L, H, W, 2) -> (..., H, W, 2L) with channels x0, y0, x1, y1, ..."""
    *lead, length, h, w, two = flows.shape
    moved = np.moveaxis(flows, -4, -2)  # (..., H, W, L, 2)
    return moved.reshape(*lead, h, w, length * two)
