"""Optical-flow extraction into TSN folders: layout, values, quantisation, resumability, CLI."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from data_helpers import moving_square_video
from typer.testing import CliRunner

from aarm.data.flow import (
    DONE,
    available_methods,
    extract_flow,
    quantize_flow,
    resolve_method,
)
from aarm.data.frames import frame_folder_count, read_flow_frames, read_rgb_frames
from aarm.data.video import read_frames
from aarm.errors import BackendUnavailable, ConfigError, DataError
from export.cli import app


def dequantize_flow(gray: np.ndarray, bound: float) -> np.ndarray:
    """uint8 -> float flow in pixels: what a reader of the JPEG flow fields does (inverse of quantize_flow)."""
    return gray.astype(np.float32) * (2.0 * bound / 255.0) - bound


@pytest.fixture
def video_root(tmp_path: Path) -> Path:
    root = tmp_path / "videos"
    (root / "Right").mkdir(parents=True)
    (root / "Other").mkdir()
    moving_square_video(root / "Right" / "a.mp4", frames=6, size=64, step=2)
    moving_square_video(root / "Other" / "b.mp4", frames=5, step=1)
    (root / "Other" / "notes.txt").write_text("not a video")
    return root


def test_quantisation() -> None:
    q = quantize_flow(np.array([-50.0, -20.0, 0.0, 0.05, 20.0, 33.0]), bound=20.0)
    assert q.tolist() == [0, 0, 128, 128, 255, 255]  # 128 is zero motion, clipped to +-bound
    assert abs(dequantize_flow(np.array([128], np.uint8), 20.0)[0]) < 0.1
    f = np.linspace(-19, 19, 50)
    assert np.abs(dequantize_flow(quantize_flow(f, 20.0), 20.0) - f).max() <= 20.0 / 255 + 1e-6


def test_extract_layout_values_and_resume(video_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "flow"
    summary = extract_flow(video_root, out, method="farneback", bound=20)
    assert sorted(Path(v).name for v in summary.extracted) == ["a.mp4", "b.mp4"] and not summary.skipped
    assert (summary.frames, summary.flows) == (11, 9)
    a = out / "Right" / "a"
    assert frame_folder_count(a) == 6 and frame_folder_count(a, "flow") == 5
    rgb = read_rgb_frames(a, [0, 5]).astype(int)
    assert rgb.shape == (2, 64, 64, 3)
    assert np.abs(rgb - read_frames(video_root / "Right" / "a.mp4", [0, 5])).mean() < 3  # RGB order kept
    marker = json.loads((a / DONE).read_text())
    assert marker["method"] == "farneback" and marker["bound"] == 20 and marker["flows"] == 5
    # The square moves right by 2 px per frame: positive x flow on it, about none in y or on the background.
    flow = dequantize_flow(read_flow_frames(a, [2])[0], 20.0)
    on_square = flow[12:20, 10:20]
    assert on_square[..., 0].mean() > 1.5 and abs(on_square[..., 1].mean()) < 0.5
    assert abs(flow[45:]).mean() < 0.3

    again = extract_flow(video_root, out, method="farneback", bound=20)
    assert not again.extracted and len(again.skipped) == 2 and (again.frames, again.flows) == (11, 9)

    # An interrupted video (a folder without its .done marker) is redone and replaced; others are skipped.
    (a / DONE).unlink()
    (a / "img_00006.jpg").unlink()
    third = extract_flow(video_root, out, method="farneback", bound=20)
    assert [Path(v).name for v in third.extracted] == ["a.mp4"] and len(third.skipped) == 1
    assert frame_folder_count(a) == 6 and (a / DONE).is_file()
    assert not [p for p in (out / "Right").iterdir() if p.name.startswith(".")]  # no temporary folders left

    with pytest.raises(DataError, match="was extracted with method=farneback bound=20"):
        extract_flow(video_root, out, method="farneback", bound=10)


def test_parallel_workers_match_serial(video_root: Path, tmp_path: Path) -> None:
    extract_flow(video_root, tmp_path / "one", method="farneback")
    extract_flow(video_root, tmp_path / "two", method="farneback", workers=2)
    for rel in ("Right/a", "Other/b"):
        n = frame_folder_count(tmp_path / "one" / rel, "flow")
        assert np.array_equal(read_flow_frames(tmp_path / "one" / rel, range(n)),
                              read_flow_frames(tmp_path / "two" / rel, range(n)))


def test_methods_and_errors(tmp_path: Path) -> None:
    methods = available_methods()
    assert methods[-1] == "farneback"
    assert resolve_method("auto") == methods[0]
    if "tvl1" not in methods:
        with pytest.raises(BackendUnavailable, match="tvl1"):
            resolve_method("tvl1")
    with pytest.raises(ConfigError, match="unknown flow method"):
        resolve_method("lucas-kanade")
    with pytest.raises(DataError, match="does not exist"):
        extract_flow(tmp_path / "missing", tmp_path / "o")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no video files"):
        extract_flow(tmp_path / "empty", tmp_path / "o")
    with pytest.raises(ConfigError, match="bound"):
        extract_flow(tmp_path / "empty", tmp_path / "o", bound=0)


def test_cli_extract_flow(video_root: Path, tmp_path: Path) -> None:
    shutil.rmtree(video_root / "Other")
    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["extract-flow", str(video_root), str(out), "--method", "farneback"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "extract_flow.json").read_text())
    assert report["extracted"] == 1 and report["flows"] == 5
    result = CliRunner().invoke(app, ["extract-flow", str(video_root), str(out), "--method", "farneback"])
    assert result.exit_code == 0 and json.loads((out / "extract_flow.json").read_text())["skipped"] == 1
