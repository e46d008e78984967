"""Video files decoded with PyAV.

`frame_count` counts the video packets (no decoding), which is exact for one frame per packet and does not
trust the container's header. `read_frames` keeps only the frames asked for: where the video's keyframes let
it skip at least a quarter of the decoding, it seeks to the keyframe before each run of wanted frames, else
it decodes once from the start; either way it returns the same frames (anything the seeking read cannot
vouch for falls back to the sequential one). An index past the last decodable frame gets the last frame, so
a wrong count never fails a read. A file with no video stream, a still image (PNG, JPEG, ... read by FFmpeg's
image demuxers) and a video of one frame are refused with a DataError: there is no motion to recognise.
"""

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import av
import numpy as np

from aarm.errors import DataError

# Seek only when it decodes at least this fraction fewer frames than reading from the start.
SEEK_SAVING = 0.25


def _open(path: Path) -> "av.container.InputContainer":
    path = Path(path)
    if not path.is_file():
        raise DataError(f"video {path} not found")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise DataError(f"cannot open video {path}: {exc}") from exc
    if not container.streams.video:
        container.close()
        raise DataError(f"{path} has no video stream")
    if _is_image_format(container.format.name):
        container.close()
        raise DataError(f"{path} is a still image ({container.format.name}), not a video")
    return container


def _is_image_format(name: str) -> bool:
    """FFmpeg's demuxers of still images: image2 (and image2pipe) and the per-codec pipes (png_pipe, ...)."""
    return name in ("image2", "image2pipe") or name.endswith("_pipe")


@dataclass(frozen=True)
class _Packets:
    """The video stream's packets, demuxed without decoding. `count`: packets with data (frames). `pts`:
    their timestamps in presentation order (pts[i] is frame i), None where timestamps cannot identify frames
    (one missing or repeated); `keyframes`: (frame index, timestamp to seek to) of each keyframe, increasing."""

    count: int
    pts: tuple[int, ...] | None
    keyframes: tuple[tuple[int, int], ...]


def _scan(path: Path) -> _Packets:
    """The packet index of `path`, cached per file version (path, size, modification time)."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        raise DataError(f"video {path} not found") from None
    return _scan_cached(str(path), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=64)
def _scan_cached(path: str, size: int, mtime_ns: int) -> _Packets:
    packets: list[tuple[int | None, bool]] = []
    with _open(Path(path)) as container:
        stream = container.streams.video[0]
        try:
            for packet in container.demux(stream):
                if packet.size > 0:
                    packets.append((packet.pts, bool(packet.is_keyframe)))
        except av.FFmpegError as exc:
            raise DataError(f"cannot read video {path}: {exc}") from exc
    stamps = [p for p, _ in packets]
    if None in stamps or len(set(stamps)) != len(stamps):
        return _Packets(len(packets), None, ())
    order = sorted(stamps)  # type: ignore[type-var]
    frame_of = {p: i for i, p in enumerate(order)}
    keyframes = sorted((frame_of[p], p) for p, key in packets if key)  # demuxers seek by presentation time
    return _Packets(len(packets), tuple(order), tuple(keyframes))  # type: ignore[arg-type]


def frame_count(path: Path) -> int:
    """Number of frames of the first video stream, counted from its packets."""
    n = _scan(path).count
    if n == 0:
        raise DataError(f"video {path} has no frames")
    if n == 1:
        raise DataError(f"video {path} has a single frame (a still image); actions need motion: 2 or more frames")
    return n


def read_frames(path: Path, indices: Sequence[int], *, seek: bool = True) -> np.ndarray:
    """Frames `indices` (0-based, any order, repeats allowed) as (T, H, W, 3) uint8 RGB.

    Frame i is the i-th frame the decoder outputs from the start (presentation order). `seek` (default):
    decode from the keyframe before each run of wanted frames where that saves work (`_plan_seeks`),
    falling back to the sequential read for anything it cannot vouch for, so the frames are the same.
    `seek=False`: decode sequentially up to the largest index. Only the frames asked for become RGB.
    """
    wanted = frozenset(int(i) for i in indices)
    if not wanted:
        raise DataError(f"no frame indices given for {path}")
    if min(wanted) < 0:
        raise DataError(f"negative frame index {min(wanted)} for {path}")
    kept = _read_by_seeking(Path(path), wanted) if seek else None
    if kept is None:
        kept = _read_sequentially(Path(path), wanted)
    last_index = max(kept)  # the last decodable frame where an index runs past it
    return np.stack([kept[min(int(i), last_index)] for i in indices])


def _read_sequentially(path: Path, wanted: frozenset[int]) -> dict[int, np.ndarray]:
    """{index: RGB frame} of the wanted indices up to the last decodable frame, that one included when an
    index runs past it."""
    last_wanted = max(wanted)
    kept: dict[int, np.ndarray] = {}
    last: tuple[int, av.VideoFrame] | None = None
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for i, frame in enumerate(container.decode(stream)):
                if i in wanted:
                    kept[i] = frame.to_ndarray(format="rgb24")
                last = (i, frame)
                if i >= last_wanted:
                    break
        except av.FFmpegError as exc:
            if last is None:
                raise DataError(f"cannot decode video {path}: {exc}") from exc
            # A damaged tail: keep what decoded, the missing indices get the last good frame.
    if last is None:
        raise DataError(f"video {path} has no decodable frames")
    last_index, last_frame = last
    if last_index < last_wanted and last_index not in kept:
        kept[last_index] = last_frame.to_ndarray(format="rgb24")
    return kept


def _plan_seeks(packets: _Packets, targets: Sequence[int]) -> list[tuple[int, int, int]] | None:
    """Decoding runs (first frame, seek timestamp, last frame) that cover the sorted frame indices `targets`,
    each from the keyframe at or before its first target and continued while the next target's keyframe
    comes no later than the run's end; None when seeking would not save SEEK_SAVING of the decoding."""
    if packets.pts is None or not packets.keyframes or packets.keyframes[0][0] != 0:
        return None
    starts = [k for k, _ in packets.keyframes]
    runs: list[list[int]] = []
    for t in targets:
        k = bisect.bisect_right(starts, t) - 1
        if runs and starts[k] <= runs[-1][2] + 1:  # reached by decoding on from the previous run
            runs[-1][2] = max(runs[-1][2], t)
        else:
            runs.append([starts[k], packets.keyframes[k][1], t])
    decoded = sum(last - first + 1 for first, _, last in runs)
    if decoded > (1.0 - SEEK_SAVING) * (targets[-1] + 1):
        return None
    return [(first, ts, last) for first, ts, last in runs]


def _read_by_seeking(path: Path, wanted: frozenset[int]) -> dict[int, np.ndarray] | None:
    """{index: RGB frame} decoded run by run from keyframes (indices past the end read as the last frame),
    or None to read sequentially instead: seeking saves too little, the timestamps do not identify frames,
    or a run does not decode exactly the frames the packet index expects."""
    try:
        packets = _scan(path)
    except DataError:
        return None  # the sequential read reports the problem
    if packets.pts is None or packets.count < 2:
        return None
    n = packets.count
    targets = sorted({min(i, n - 1) for i in wanted})
    plan = _plan_seeks(packets, targets)
    if plan is None:
        return None
    frame_of = {p: i for i, p in enumerate(packets.pts)}
    kept: dict[int, np.ndarray] = {}
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for first, seek_ts, last in plan:
                if not _decode_run(container, frame_of, (first, seek_ts, last), set(targets), kept):
                    return None
        except av.FFmpegError:
            return None
    return kept


def _decode_run(
    container: "av.container.InputContainer", frame_of: dict[int, int], run: tuple[int, int, int],
    targets: set[int], kept: dict[int, np.ndarray],
) -> bool:
    """Seek to the keyframe that starts `run` (first frame, seek timestamp, last frame) and decode through its
    last frame, keeping `targets`. False when the demuxer lands on anything but a keyframe at or before the
    first frame, or the decoder's frames from the first on are not first, first + 1, ... in order (frames
    shown before it, such as the leading frames of an open GOP, are skipped)."""
    first, seek_ts, last = run
    stream = container.streams.video[0]
    container.seek(seek_ts, stream=stream, backward=True, any_frame=False)
    expected, landed = first, False
    for packet in container.demux(stream):
        if not landed and packet.size > 0:
            if not packet.is_keyframe or frame_of.get(packet.pts, first + 1) > first:
                return False
            landed = True
        for frame in packet.decode():
            i = frame_of.get(frame.pts) if frame.pts is not None else None
            if i is None:
                return False
            if i < first:
                continue
            if i != expected:
                return False
            if i in targets:
                kept[i] = frame.to_ndarray(format="rgb24")
            expected += 1
            if expected > last:
                return True
    return False
