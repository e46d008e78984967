"""Spatial transforms: one crop and flip for every frame of a sample; flow flips negate x."""

import numpy as np
import pytest
import torch

from aarm.data.transforms import (
    SCALES,
    Crop,
    apply_crop,
    eval_transform,
    flip_horizontal,
    normalize,
    sample_crop,
    train_transform,
)
from aarm.errors import ConfigError, DataError

MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.1)


def shifted_frames(t: int = 4, h: int = 60, w: int = 80, c: int = 3) -> np.ndarray:
    """Frame i = a random image + 10 i: a resize is linear, so outputs differ by exactly 10 i / 255 / std."""
    base = np.random.default_rng(0).integers(0, 200, size=(h, w, c), dtype=np.uint8)
    return np.stack([base + 10 * i for i in range(t)]).astype(np.uint8)


@pytest.mark.parametrize("seed", range(6))
def test_train_transform_same_crop_and_flip_for_every_frame(seed: int) -> None:
    frames = shifted_frames()
    x = train_transform(frames, 32, np.random.default_rng(seed), mean=MEAN, std=STD)
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
    std = torch.tensor(STD).view(1, 3, 1, 1)
    diff = (x - x[:1]) * std * 255  # undo the normalisation: frame i - frame 0 = 10 i everywhere
    expected = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1) * 10
    torch.testing.assert_close(diff, expected.expand_as(diff), atol=1e-3, rtol=0)


def test_train_transform_is_deterministic_for_an_rng() -> None:
    frames = shifted_frames()
    a = train_transform(frames, 32, np.random.default_rng(5), mean=MEAN, std=STD)
    b = train_transform(frames, 32, np.random.default_rng(5), mean=MEAN, std=STD)
    assert torch.equal(a, b)
    crops = {sample_crop(60, 80, 32, np.random.default_rng(s)) for s in range(50)}
    assert any(c.flip for c in crops) and any(not c.flip for c in crops)


def test_sample_crop_scales_and_positions() -> None:
    sizes = {int(60 * s) for s in SCALES}
    rng = np.random.default_rng(0)
    for _ in range(300):
        c = sample_crop(60, 80, 48, rng)
        assert c.height in sizes and c.width in sizes
        assert abs(sorted(sizes).index(c.height) - sorted(sizes).index(c.width)) <= 1
        dy, dx = (60 - c.height) // 4, (80 - c.width) // 4
        assert (c.top, c.left) in {(0, 0), (0, 4 * dx), (4 * dy, 0), (4 * dy, 4 * dx), (2 * dy, 2 * dx)}
        assert c.top + c.height <= 60 and c.left + c.width <= 80


def test_flip_mirrors_rgb_and_negates_flow_x() -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 255, size=(2, 16, 16, 3), dtype=np.uint8)
    plain = apply_crop(rgb, Crop(0, 0, 16, 16, flip=False), 16, mean=MEAN, std=STD)
    flipped = apply_crop(rgb, Crop(0, 0, 16, 16, flip=True), 16, mean=MEAN, std=STD)
    assert torch.equal(flipped, plain.flip(-1))

    flow = np.zeros((2, 16, 16, 4), np.uint8)  # a 2-field stack: x0, y0, x1, y1
    flow[..., 0], flow[..., 1], flow[..., 2], flow[..., 3] = 204, 51, 153, 102  # 0.8, 0.2, 0.6, 0.4
    x = apply_crop(flow, Crop(0, 0, 16, 16, flip=True), 16, mean=(0.0, 0.0), std=(1.0, 1.0), flow=True)
    assert x.shape == (2, 4, 16, 16)
    torch.testing.assert_close(x[:, :, 3, 3], torch.tensor([[0.2, 0.2, 0.4, 0.4]] * 2), atol=1e-6, rtol=0)
    f = torch.rand(1, 2, 4, 4)
    g = flip_horizontal(f.clone(), flow=True)
    torch.testing.assert_close(g[:, 0], 1 - f[:, 0].flip(-1))
    torch.testing.assert_close(g[:, 1], f[:, 1].flip(-1))


def test_eval_transform_resizes_short_side_and_centre_crops() -> None:
    cols = np.tile(np.arange(64, dtype=np.uint8) * 3, (48, 1))  # value = 3 * column
    frames = np.repeat(cols[None, :, :, None], 3, axis=3).repeat(2, axis=0)  # (2, 48, 64, 3)
    x = eval_transform(frames, 40, 48, mean=(0, 0, 0), std=(1, 1, 1))  # short side already 48: crop only
    assert x.shape == (2, 3, 40, 40)
    torch.testing.assert_close(x[0, 0, 0], torch.arange(12, 52, dtype=torch.float32) * 3 / 255)
    y = eval_transform(frames, 56, 64, mean=MEAN, std=STD)  # upscaled to 64 x 85, centre 56 x 56
    assert y.shape == (2, 3, 56, 56) and torch.equal(y[0], y[1])
    with pytest.raises(DataError, match="uint8 frames"):
        eval_transform(frames.astype(np.float32), 40, 48, mean=MEAN, std=STD)


def test_normalize_repeats_stats_over_a_flow_stack() -> None:
    x = torch.full((1, 20, 2, 2), 0.75)
    y = normalize(x, (0.5, 0.25), (0.25, 0.5))
    assert torch.allclose(y[0, 0::2], torch.tensor(1.0)) and torch.allclose(y[0, 1::2], torch.tensor(1.0))
    with pytest.raises(ConfigError, match="do not divide"):
        normalize(torch.zeros(1, 3, 2, 2), (0.5, 0.5), (1.0, 1.0))
