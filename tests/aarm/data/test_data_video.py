"""PyAV decoding of generated videos and TSN frame-folder readers."""

from pathlib import Path

import numpy as np
import pytest
from data_helpers import gray_video, write_frame_folder

from aarm.data.frames import (
    frame_folder_count,
    interleave_flow,
    is_frame_folder,
    read_flow_frames,
    read_flow_stacks,
    read_rgb_frames,
)
from aarm.data.video import frame_count, read_frames
from aarm.errors import DataError

LEVELS = [16 + 10 * i for i in range(20)]


@pytest.fixture(scope="module")
def gray(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return gray_video(tmp_path_factory.mktemp("video") / "gray.mp4", LEVELS)


def test_frame_count_and_values(gray: Path) -> None:
    assert frame_count(gray) == 20
    frames = read_frames(gray, [19, 0, 7, 7, 3])
    assert frames.shape == (5, 32, 48, 3) and frames.dtype == np.uint8
    means = frames.reshape(5, -1).mean(axis=1)
    np.testing.assert_allclose(means, [LEVELS[19], LEVELS[0], LEVELS[7], LEVELS[7], LEVELS[3]], atol=3)
    assert np.array_equal(frames[2], frames[3])


def test_indices_past_the_end_get_the_last_frame(gray: Path) -> None:
    # A container that over-reports its length must not fail a read: the last decoded frame stands in.
    frames = read_frames(gray, [18, 19, 25, 400])
    assert np.array_equal(frames[1], frames[2]) and np.array_equal(frames[1], frames[3])
    assert not np.array_equal(frames[0], frames[1])


def test_decoding_errors(gray: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="negative frame index"):
        read_frames(gray, [-1, 2])
    with pytest.raises(DataError, match="no frame indices"):
        read_frames(gray, [])
    with pytest.raises(DataError, match="not found"):
        frame_count(tmp_path / "missing.mp4")
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"not a video at all" * 10)
    with pytest.raises(DataError, match="junk.avi"):
        read_frames(junk, [0])


def test_rgb_frame_folder(tmp_path: Path) -> None:
    folder = write_frame_folder(tmp_path / "v", rgb=5)
    assert is_frame_folder(folder) and not is_frame_folder(tmp_path)
    assert frame_folder_count(folder) == 5
    frames = read_rgb_frames(folder, [4, 0, 0])
    assert frames.shape == (3, 24, 32, 3) and frames.dtype == np.uint8
    np.testing.assert_allclose(frames.reshape(3, -1).mean(axis=1), [50, 10, 10], atol=1)
    with pytest.raises(DataError, match="img_00006.jpg not found"):
        read_rgb_frames(folder, [5])
    with pytest.raises(DataError, match="holds no flow fields"):
        frame_folder_count(folder, "flow")


def test_flow_frame_folder_and_interleaving(tmp_path: Path) -> None:
    folder = write_frame_folder(tmp_path / "v", flows=4)
    assert frame_folder_count(folder, "flow") == 4
    fields = read_flow_frames(folder, [0, 3])
    assert fields.shape == (2, 24, 32, 2)
    np.testing.assert_allclose(fields[0, 0, 0], [101, 151], atol=1)  # channel 0 = x, 1 = y
    stacks = read_flow_stacks(folder, [0, 2], stack=3)  # second stack runs past the end: 3, 4, 4 (1-based)
    assert stacks.shape == (2, 24, 32, 6)
    np.testing.assert_allclose(stacks[0, 5, 5], [101, 151, 102, 152, 103, 153], atol=1)
    np.testing.assert_allclose(stacks[1, 5, 5], [103, 153, 104, 154, 104, 154], atol=1)
    (folder / "flow_y_00004.jpg").unlink()
    with pytest.raises(DataError, match="4 flow_x but 3 flow_y"):
        frame_folder_count(folder, "flow")


def test_interleave_flow_order() -> None:
    flows = np.zeros((3, 1, 1, 2), np.uint8)  # (L, H, W, 2)
    flows[:, 0, 0, 0] = [10, 11, 12]
    flows[:, 0, 0, 1] = [20, 21, 22]
    assert interleave_flow(flows)[0, 0].tolist() == [10, 20, 11, 21, 12, 22]


def test_mpeg4_avi_fallback_codec(tmp_path: Path) -> None:
    from aarm.data.synthetic import pick_codec, write_video

    assert pick_codec("mpeg4") == ("mpeg4", ".avi")
    frames = np.stack([np.full((16, 16, 3), v, np.uint8) for v in (40, 120, 200)])
    path = tmp_path / "v.avi"
    write_video(path, frames, "mpeg4")
    assert frame_count(path) == 3
    np.testing.assert_allclose(read_frames(path, [2, 0]).reshape(2, -1).mean(axis=1), [200, 40], atol=3)
