"""One model input from one video, as a Preprocessing describes it. VideoDataset and prediction/calibration
share this code, so a video gives bit-identical evaluation tensors whichever of them reads it.

    x = load_video_input(Path("v_x.avi"), preprocessing, num_clips=1)   # (V, K, C, H, W) or (V, C, T, H, W)

`stage`, where given, is entered around each step under its stage name (`runtime.timings` times them):
"decode" (counting and decoding frames), "sampling" (choosing the indices, arranging the frames per view)
and "preprocess" (crop, resize, normalisation, layout).

A path is a video file (RGB only) or a TSN frame folder (RGB `img_*.jpg` or flow `flow_x/y_*.jpg`).
"""

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aarm.data import sampling
from aarm.data.frames import frame_folder_count, interleave_flow, read_flow_frames, read_rgb_frames
from aarm.data.preprocessing import Preprocessing
from aarm.data.transforms import eval_transform, train_transform
from aarm.data.video import frame_count, read_frames
from aarm.errors import DataError


def count_frames(path: Path, modality: str = "rgb") -> int:
    """Frames of a video file or frame folder; for flow, the flow fields of a frame folder."""
    path = Path(path)
    if path.is_dir():
        return frame_folder_count(path, modality)
    if modality == "flow":
        raise DataError(f"{path}: flow input needs a frame folder of flow_x/flow_y JPEGs; run `extract_flow`")
    return frame_count(path)


def sample_indices(
    num_frames: int, preprocessing: Preprocessing, *, train: bool, num_clips: int = 1,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Frame (or flow field) indices of every view: (V, K, L) for NKCHW (L = 1 RGB, flow_stack flow),
    (V, T) for NCTHW. V = 1 in training."""
    p = preprocessing
    if train and rng is None:
        raise DataError("training sampling needs an rng")
    if p.layout == "NKCHW":
        snippet = p.flow_stack if p.modality == "flow" else 1
        if train:
            return sampling.tsn_train_indices(num_frames, p.segments, snippet, rng)[None]
        return sampling.tsn_eval_indices(num_frames, p.segments, snippet, num_clips)
    if train:
        return sampling.clip_train_indices(num_frames, p.frames, p.stride, rng)[None]
    return sampling.clip_eval_indices(num_frames, p.frames, p.stride, num_clips)


def read_indices(path: Path, indices: np.ndarray, modality: str) -> np.ndarray:
    """uint8 (*indices.shape, H, W, c) frames: c = 3 RGB, 2 flow (x, y); each distinct frame decoded once."""
    path = Path(path)
    flat = indices.reshape(-1).tolist()
    if modality == "flow":
        if not path.is_dir():
            raise DataError(f"{path}: flow input needs a frame folder of flow_x/flow_y JPEGs")
        frames = read_flow_frames(path, flat)
    elif path.is_dir():
        frames = read_rgb_frames(path, flat)
    else:
        frames = read_frames(path, flat)
    return frames.reshape(*indices.shape, *frames.shape[1:])


StageFn = Callable[[str], AbstractContextManager[Any]]


def _untimed(name: str) -> AbstractContextManager[Any]:
    return nullcontext()


def load_views(
    path: Path, preprocessing: Preprocessing, *, train: bool, num_clips: int = 1,
    rng: np.random.Generator | None = None, num_frames: int | None = None, flip: bool = True,
    stage: StageFn | None = None,
) -> torch.Tensor:
    """The sample of one video: float32 (V, K, C, H, W) for NKCHW or (V, C, T, H, W) for NCTHW.

    Training (V = 1) draws indices, crop and (if `flip`) a horizontal flip from `rng`; evaluation is
    deterministic. `stage(name)` wraps each step (see the module's docstring).
    """
    p = preprocessing
    stage = stage or _untimed
    flow = p.modality == "flow"
    with stage("decode"):
        n = num_frames if num_frames is not None else count_frames(path, p.modality)
    with stage("sampling"):
        indices = sample_indices(n, p, train=train, num_clips=num_clips, rng=rng)
    with stage("decode"):
        frames = read_indices(path, indices, p.modality)
    with stage("sampling"):
        if p.layout == "NKCHW":
            # (V, K, L, H, W, c) -> (V, K, H, W, L * c): one RGB frame, or an interleaved flow stack.
            frames = interleave_flow(frames) if flow else frames[:, :, 0]
        views, steps = frames.shape[:2]
        flat = frames.reshape(views * steps, *frames.shape[2:])  # every frame of every view: one crop for all
    with stage("preprocess"):
        if train:
            x = train_transform(flat, p.size, rng, mean=p.mean, std=p.std, flow=flow, flip=flip)
        else:
            x = eval_transform(flat, p.size, p.scale_size, mean=p.mean, std=p.std)
        x = x.reshape(views, steps, *x.shape[1:])  # (V, K or T, C, H, W)
        if p.layout == "NCTHW":
            x = x.permute(0, 2, 1, 3, 4)
        return x.contiguous()


def load_video_input(
    path: Path, preprocessing: Preprocessing, num_clips: int = 1, *, stage: StageFn | None = None
) -> torch.Tensor:
    """The evaluation input of one video, exactly as VideoDataset(train=False) gives it: (V, ...) float32."""
    return load_views(Path(path), preprocessing, train=False, num_clips=num_clips, stage=stage)
