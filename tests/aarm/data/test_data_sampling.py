"""Segment (TSN) and clip (3D) sampling: bounds, centres, views, determinism, short videos."""

import numpy as np
import pytest

from aarm.data.sampling import clip_eval_indices, clip_train_indices, tsn_eval_indices, tsn_train_indices
from aarm.errors import DataError


def test_tsn_eval_centres() -> None:
    idx = tsn_eval_indices(30, segments=3, snippet=1)
    assert idx.shape == (1, 3, 1)
    assert idx[0, :, 0].tolist() == [5, 15, 25]  # the centre of each 10-frame segment
    stacks = tsn_eval_indices(30, segments=3, snippet=5)  # 26 possible starts, segments of 8.67
    assert stacks[0, :, 0].tolist() == [4, 13, 21]
    assert (np.diff(stacks[0], axis=1) == 1).all()


def test_tsn_eval_views_spread_inside_segments() -> None:
    idx = tsn_eval_indices(30, segments=3, snippet=1, num_clips=4)[..., 0]  # (V, K)
    assert idx.shape == (4, 3)
    for k in range(3):
        assert (idx[:, k] >= 10 * k).all() and (idx[:, k] < 10 * (k + 1)).all()
        assert (np.diff(idx[:, k]) > 0).all()
    assert idx[:, 0].tolist() == [1, 3, 6, 8]


def test_tsn_train_within_segments_and_deterministic() -> None:
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        idx = tsn_train_indices(30, segments=3, snippet=1, rng=rng)[:, 0]
        for k, i in enumerate(idx):
            assert 10 * k <= i < 10 * (k + 1)
        seen.update(idx.tolist())
    assert seen == set(range(30))  # every frame gets drawn
    a = tsn_train_indices(100, 5, 10, np.random.default_rng(7))
    b = tsn_train_indices(100, 5, 10, np.random.default_rng(7))
    assert np.array_equal(a, b) and a.shape == (5, 10) and a.max() <= 99


def test_short_videos_repeat_frames() -> None:
    idx = tsn_eval_indices(2, segments=3, snippet=5)
    assert idx.shape == (1, 3, 5) and idx.min() == 0 and idx.max() == 1
    assert tsn_train_indices(1, 3, 1, np.random.default_rng(0)).tolist() == [[0], [0], [0]]
    clip = clip_eval_indices(5, frames=4, stride=2)
    assert clip.tolist() == [[0, 2, 4, 4]]
    assert clip_train_indices(3, 8, 1, np.random.default_rng(0)).tolist() == [0, 1, 2, 2, 2, 2, 2, 2]


def test_clip_eval_centre_and_uniform_views() -> None:
    assert clip_eval_indices(20, frames=4, stride=2).tolist() == [[7, 9, 11, 13]]  # span 7: starts 0..13, middle 7
    assert clip_eval_indices(21, frames=4, stride=2).tolist() == [[7, 9, 11, 13]]  # exactly centred
    views = clip_eval_indices(100, frames=8, stride=2, num_clips=5)
    assert views.shape == (5, 8)
    starts = views[:, 0]
    assert starts.min() >= 0 and views.max() <= 99
    gaps = np.diff(starts)
    assert (gaps > 0).all() and gaps.max() - gaps.min() <= 1  # uniformly spaced


def test_clip_train_random_start() -> None:
    rng = np.random.default_rng(1)
    starts = {int(clip_train_indices(20, 4, 3, rng)[0]) for _ in range(300)}
    assert starts == set(range(11))  # span 10 -> starts 0..10
    a = clip_train_indices(50, 8, 2, np.random.default_rng(3))
    assert np.array_equal(a, clip_train_indices(50, 8, 2, np.random.default_rng(3)))
    assert (np.diff(a) == 2).all()


def test_invalid_arguments() -> None:
    with pytest.raises(DataError, match="0 frames"):
        tsn_eval_indices(0, 3, 1)
    with pytest.raises(DataError, match="segments must be >= 1"):
        tsn_eval_indices(10, 0, 1)
    with pytest.raises(DataError, match="num_clips must be >= 1"):
        clip_eval_indices(10, 4, 1, num_clips=0)
