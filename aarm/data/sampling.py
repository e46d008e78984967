"""Which frames a sample reads: pure functions of a frame count (and an rng in training).

TSN (Wang et al. 2016): the usable starts 0 .. n - L (L = snippet length: 1 RGB frame or `flow_stack` flow
fields) are cut into K equal segments; training takes one uniformly random start per segment, evaluation
the centre of each. With N evaluation views, view v takes the point (v + 0.5) / N of the way through each
segment (N = 1: the centre). A snippet is L consecutive indices, clamped to the last frame, so a video
shorter than K or L repeats frames instead of failing.

3D clips: T frames every s frames (span (T - 1) * s + 1). Training takes a uniformly random start;
evaluation N uniformly spaced clips, view v starting (v + 0.5) / N of the way through the possible starts
(N = 1: the centre clip). A video shorter than the span starts at 0 and repeats its last frame.
"""

import numpy as np

from aarm.errors import DataError


def _check(num_frames: int, **positive: int) -> None:
    if num_frames < 1:
        raise DataError(f"cannot sample from a video with {num_frames} frames")
    for name, value in positive.items():
        if value < 1:
            raise DataError(f"{name} must be >= 1, got {value}")


def _snippets(starts: np.ndarray, snippet: int, num_frames: int) -> np.ndarray:
    return np.minimum(starts[..., None] + np.arange(snippet), num_frames - 1).astype(np.int64)


def tsn_train_indices(num_frames: int, segments: int, snippet: int, rng: np.random.Generator) -> np.ndarray:
    """(K, L) indices: one random snippet start per segment."""
    _check(num_frames, segments=segments, snippet=snippet)
    usable = max(num_frames - snippet + 1, 1)
    length = usable / segments
    starts = np.floor(length * (np.arange(segments) + rng.random(segments))).astype(np.int64)
    return _snippets(np.minimum(starts, usable - 1), snippet, num_frames)


def tsn_eval_indices(num_frames: int, segments: int, snippet: int, num_clips: int = 1) -> np.ndarray:
    """(V, K, L) indices: view v starts each segment's snippet (v + 0.5) / V of the way through it."""
    _check(num_frames, segments=segments, snippet=snippet, num_clips=num_clips)
    usable = max(num_frames - snippet + 1, 1)
    length = usable / segments
    where = (np.arange(num_clips)[:, None] + 0.5) / num_clips + np.arange(segments)[None, :]  # (V, K)
    starts = np.minimum(np.floor(length * where).astype(np.int64), usable - 1)
    return _snippets(starts, snippet, num_frames)


def clip_train_indices(num_frames: int, frames: int, stride: int, rng: np.random.Generator) -> np.ndarray:
    """(T,) indices of one clip with a uniformly random start."""
    _check(num_frames, frames=frames, stride=stride)
    starts = max(num_frames - (frames - 1) * stride, 1)
    start = int(rng.integers(starts))
    return np.minimum(start + stride * np.arange(frames), num_frames - 1).astype(np.int64)


def clip_eval_indices(num_frames: int, frames: int, stride: int, num_clips: int = 1) -> np.ndarray:
    """(V, T) indices of V uniformly spaced clips (V = 1: the centre clip)."""
    _check(num_frames, frames=frames, stride=stride, num_clips=num_clips)
    starts = max(num_frames - (frames - 1) * stride, 1)
    start = np.floor(starts * (np.arange(num_clips) + 0.5) / num_clips).astype(np.int64)
    return np.minimum(start[:, None] + stride * np.arange(frames), num_frames - 1).astype(np.int64)
