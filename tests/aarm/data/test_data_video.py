"""PyAV decoding of generated videos and TSN frame-folder readers."""

from pathlib import Path

import numpy as np
import pytest
from data_helpers import gray_video, write_frame_folder

from aarm.data.clips import read_indices
from aarm.data.frames import (
    frame_folder_count,
    interleave_flow,
    is_frame_folder,
    read_flow_frames,
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
    # two stacks of three fields as the samplers index them (a stack past the end repeats the last field),
    # read and interleaved the way load_views does: the second is fields 3, 4, 4 (1-based)
    stacks = interleave_flow(read_indices(folder, np.array([[0, 1, 2], [2, 3, 3]]), "flow"))
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


# ------------------------------------------------------------------------------ seeking to the sampled frames


def _sampled(n: int) -> list[list[int]]:
    """Index sets a model reads from an n-frame video: TSN evaluation at K = 3 and 8 (1 and 2 views), a 3D
    centre clip, and an unordered set with repeats and indices past the end."""
    from aarm.data.sampling import clip_eval_indices, tsn_eval_indices

    sets = [tsn_eval_indices(n, k, 1, v).reshape(-1).tolist() for k, v in ((3, 1), (8, 1), (3, 2))]
    sets.append(clip_eval_indices(n, 4, 4).reshape(-1).tolist())
    sets.append([n - 1, 0, n // 2, n // 2, n + 7, 1])
    return sets


def _gop_video(path: Path, codec: str, gop: int, frames: int = 60, size: int = 48) -> Path:
    from aarm.data.synthetic import synthesize, write_video

    write_video(path, synthesize(1, 0, 0, seed=4, frames=frames, size=size, trails=True), codec, gop=gop)
    return path


@pytest.mark.parametrize(("codec", "suffix"), [("libx264", "mp4"), ("mpeg4", "avi")])
def test_seeking_reads_the_frames_a_full_decode_reads(codec: str, suffix: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Keyframes every 8 frames (x264 with B-frames, or MPEG-4 Part 2): the sampled frames come from seeks,
    never from the sequential read, and equal the sequential read's frames bit for bit."""
    import aarm.data.video as video

    path = _gop_video(tmp_path / f"gop8.{suffix}", codec, gop=8)
    n = frame_count(path)
    assert n == 60
    packets = video._scan(path)
    assert len(packets.keyframes) >= 60 // 8 and packets.keyframes[0][0] == 0
    full = {tuple(ix): read_frames(path, ix, seek=False) for ix in _sampled(n)}

    def no_sequential(*args: object) -> None:
        raise AssertionError("fell back to the sequential read")

    monkeypatch.setattr(video, "_read_sequentially", no_sequential)
    for ix, want in full.items():
        if video._plan_seeks(packets, sorted({min(i, n - 1) for i in ix})) is None:
            continue  # too dense to gain (the 8-segment set): the sequential read is the right one
        got = read_frames(path, list(ix))
        assert got.shape == want.shape and np.array_equal(got, want), ix
    assert video._plan_seeks(packets, [0, 30, 59]) is not None


def test_synthetic_dataset_videos_read_the_same_with_and_without_seeking(tiny_synthetic: Path) -> None:
    """make_synthetic's own videos (libx264's default keyframe interval of 250 frames, so one keyframe in a
    12-frame clip): nothing to skip, the plan is the sequential read, and the frames match."""
    import aarm.data.video as video

    clips = sorted((tiny_synthetic / "videos").rglob("*.mp4")) or sorted(tiny_synthetic.rglob("*.avi"))
    assert clips
    for path in clips[:3]:
        n = frame_count(path)
        packets = video._scan(path)
        for ix in _sampled(n):
            assert video._plan_seeks(packets, sorted({min(i, n - 1) for i in ix})) is None
            assert np.array_equal(read_frames(path, ix), read_frames(path, ix, seek=False))


def test_seeking_falls_back_where_it_cannot_vouch_for_the_frames(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A seek that lands on a later keyframe than the run needs (simulated by seeking to the next keyframe's
    timestamp) is not trusted: the sequential read answers, with the same frames."""
    import aarm.data.video as video

    path = _gop_video(tmp_path / "gop8.mp4", "libx264", gop=8)
    want = read_frames(path, [5, 50], seek=False)
    stamps = [ts for _, ts in video._scan(path).keyframes]
    real = video._decode_run
    calls = []

    def misplaced(container, frame_of, run, targets, kept):  # noqa: ANN001, ANN202 - mirrors _decode_run
        first, ts, last = run
        calls.append(run)
        later = stamps[min(stamps.index(ts) + 1, len(stamps) - 1)]
        return real(container, frame_of, (first, later, last), targets, kept)

    monkeypatch.setattr(video, "_decode_run", misplaced)
    assert video._read_by_seeking(path, frozenset([5, 50])) is None and calls
    assert np.array_equal(read_frames(path, [5, 50]), want)
