"""The synthetic action dataset: layout, determinism, and classes that differ only over time."""

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from aarm.data.annotations import load_split
from aarm.data.synthetic import (
    CLASSES,
    Motion,
    draw_motion,
    draw_scene,
    make_synthetic,
    pick_codec,
    render_video,
    synthesize,
    write_video,
)
from aarm.data.video import frame_count, read_frames
from aarm.errors import ConfigError, DataError
from export.cli import app

PAIRS = [(CLASSES[i], CLASSES[i + 1]) for i in range(0, len(CLASSES), 2)]


def test_layout_and_split(tiny_synthetic: Path) -> None:
    meta = json.loads((tiny_synthetic / "dataset.json").read_text())
    assert meta["classes"] == ["MoveLeft", "MoveRight"] and meta["seed"] == 3
    assert meta["params"]["frames"] == 12 and meta["params"]["size"] == 32
    assert meta["horizontal_flip"] is False  # MoveLeft mirrored is MoveRight
    train, test = load_split(tiny_synthetic, subset="train"), load_split(tiny_synthetic, subset="test")
    assert train.classes == test.classes == ["MoveLeft", "MoveRight"]
    assert len(train) + len(test) == 8 and len(test) == meta["splits"]["test"] > 0
    groups = lambda split: {r.path.stem.split("_")[-2] for r in split.records}  # noqa: E731
    assert not groups(train) & groups(test)  # whole groups go to test, as in UCF101
    video = train.records[0].path
    assert video.parent.parent == tiny_synthetic / "videos"
    assert frame_count(video) == 12
    assert read_frames(video, [0]).shape == (1, 32, 32, 3)
    assert {r.label for r in train.records} == {0, 1}


def test_same_seed_same_decoded_frames(tiny_synthetic: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    make_synthetic(again, classes=2, videos_per_class=4, seed=3, frames=12, size=32, workers=2)
    name = "videos/MoveRight/v_MoveRight_g02_c01"
    first = next(tiny_synthetic.glob(name + ".*"))
    second = next(again.glob(name + ".*"))
    assert np.array_equal(read_frames(first, range(12)), read_frames(second, range(12)))
    assert np.array_equal(synthesize(1, 2, 1, seed=3, frames=12, size=32, trails=True),
                          synthesize(1, 2, 1, seed=3, frames=12, size=32, trails=True))
    other = synthesize(1, 2, 1, seed=4, frames=12, size=32, trails=True)
    assert not np.array_equal(other, synthesize(1, 2, 1, seed=3, frames=12, size=32, trails=True))


def _file_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_whatever_the_workers(tmp_path: Path) -> None:
    # 64 px, 24 frames: the size where x264's macroblock tree made 6 of 8 videos differ between two encodes.
    params = dict(classes=2, videos_per_class=4, seed=5, frames=24, size=64)
    make_synthetic(tmp_path / "one", workers=1, **params)
    make_synthetic(tmp_path / "two", workers=2, **params)
    first, second = _file_bytes(tmp_path / "one"), _file_bytes(tmp_path / "two")
    assert sorted(first) == sorted(second) and len(first) == 8 + 4  # videos, 3 annotation files, dataset.json
    assert [name for name in first if first[name] != second[name]] == []


def test_write_video_is_reproducible(tmp_path: Path) -> None:
    video = synthesize(0, 1, 1, seed=0, frames=24, size=64, trails=True)
    encoder, suffix = pick_codec()
    for i in range(3):
        write_video(tmp_path / f"{i}{suffix}", video, encoder)
    encoded = {(tmp_path / f"{i}{suffix}").read_bytes() for i in range(3)}
    assert len(encoded) == 1


def _render(action_index: int, trails: bool, frames: int = 9, size: int = 48, seed: int = 0) -> np.ndarray:
    """Class `action_index` rendered from one fixed scene and one fixed motion draw."""
    scene = draw_scene(np.random.default_rng(seed), size, pad=8)
    motion = draw_motion(np.random.default_rng(seed + 1), CLASSES[action_index].motion, frames, size, pad=8)
    return render_video(CLASSES[action_index], scene, motion, frames=frames, size=size, trails=trails,
                        noise_rng=np.random.default_rng(seed + 2))


@pytest.mark.parametrize("pair", range(len(PAIRS)))
def test_pairs_are_exact_time_reversals_without_trails(pair: int) -> None:
    forward, backward = _render(2 * pair, trails=False), _render(2 * pair + 1, trails=False)
    assert not np.array_equal(forward, backward)
    assert np.array_equal(forward, backward[::-1])  # the same frames: one frame cannot tell them apart
    assert np.array_equal(forward.mean(axis=0), backward.mean(axis=0))  # so is the mean frame of a video


def test_every_class_shares_the_middle_frame_without_trails() -> None:
    # All trajectories pass through the same state at the clip's middle: with one scene and one motion
    # draw, every class renders the identical middle frame; the classes differ in how frames change.
    middles = [_render(i, trails=False)[4] for i in range(len(CLASSES))]
    for m in middles[1:]:
        assert np.array_equal(m, middles[0])
    videos = [_render(i, trails=False) for i in range(len(CLASSES))]
    assert len({v.tobytes() for v in videos}) == len(CLASSES)


def test_trails_put_direction_into_single_frames() -> None:
    forward, backward = _render(0, trails=True), _render(1, trails=True)
    assert not np.array_equal(forward, backward[::-1])
    # The trail trails: for MoveLeft the object's past lies to its right, so the middle frame's change
    # against the trail-free frame sits right of the object's centre; for MoveRight, left of it.
    plain = _render(0, trails=False)[4].astype(int)
    columns = lambda frame: np.abs(frame.astype(int) - plain).sum(axis=(0, 2))  # noqa: E731
    motion = draw_motion(np.random.default_rng(1), "horizontal", 9, 48, pad=8)
    centre = int(motion.centre[0])
    left_trail, right_trail = columns(forward[4]), columns(backward[4])
    assert left_trail[centre:].sum() > 3 * left_trail[:centre].sum()
    assert right_trail[:centre].sum() > 3 * right_trail[centre:].sum()


def test_single_frame_statistics_match_across_classes() -> None:
    # Over many draws (no trails), single frames of every class have the same brightness statistics.
    stats = []
    for i in range(len(CLASSES)):
        frames = np.stack([synthesize(i, g, 1, seed=11, frames=6, size=32, trails=False)[2] for g in range(1, 25)])
        stats.append((frames.mean(), frames.std()))
    means, stds = np.array(stats).T
    assert means.max() - means.min() < 20 and stds.max() - stds.min() < 10


def test_guards(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(DataError, match="pass `force` to replace it"):
        make_synthetic(out, classes=1, videos_per_class=2, frames=4, size=16)
    make_synthetic(out, classes=1, videos_per_class=2, frames=4, size=16, force=True)
    assert not (out / "keep.txt").exists() and (out / "dataset.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left
    with pytest.raises(ConfigError, match=r"`classes` must be 1\.\.10"):
        make_synthetic(tmp_path / "x", classes=11)
    with pytest.raises(ConfigError, match="even"):
        make_synthetic(tmp_path / "x", size=33)
    with pytest.raises(ConfigError, match="`videos_per_class` must be >= 2"):
        make_synthetic(tmp_path / "x", videos_per_class=1)


def test_motion_draws_are_shared_between_kinds() -> None:
    kinds = ["horizontal", "vertical", "rotate", "scale", "orbit"]
    draws = [draw_motion(np.random.default_rng(5), k, 32, 112, pad=16) for k in kinds]
    for d in draws[1:]:
        assert replace(d, speed=0.0, orbit_radius=0.0, orbit_phase=0.0) == replace(
            draws[0], speed=0.0, orbit_radius=0.0, orbit_phase=0.0
        )
    assert isinstance(draws[0], Motion) and 0 < draws[0].speed * 31 <= 0.6 * 112 + 1e-9
    assert 3 <= math.degrees(draws[2].speed) <= 6


def test_cli_make_synthetic(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    result = CliRunner().invoke(
        app, ["make-synthetic", str(out), "--classes", "2", "--videos-per-class", "2", "--frames", "4",
              "--size", "16", "--seed", "1", "--no-trails"],
    )
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["params"]["trails"] is False and meta["seed"] == 1
    assert len(load_split(out, subset="test")) == 2
    again = CliRunner().invoke(app, ["make-synthetic", str(out), "--classes", "2"])
    assert again.exit_code != 0 and isinstance(again.exception, DataError)
    assert str(again.exception).endswith("exists and is not empty; pass --force to replace it")  # the flag, not `force`
    bad = CliRunner().invoke(app, ["make-synthetic", str(tmp_path / "x"), "--classes", "11"])
    assert isinstance(bad.exception, ConfigError) and str(bad.exception).startswith("--classes must be 1..10 ")
