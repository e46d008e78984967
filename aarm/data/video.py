"""Video files decoded with PyAV.

`frame_count` counts the video packets (no decoding), which is exact for one frame per packet and does not
trust the container's header. `read_frames` decodes once from the start and keeps only the frames asked
for; an index past the last decodable frame gets the last frame, so a wrong count never fails a read.
A file with no video stream, a still image (PNG, JPEG, ... read by FFmpeg's image demuxers) and a video of
one frame are refused with a DataError: there is no motion to recognise.
"""

from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np

from aarm.errors import DataError


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


def frame_count(path: Path) -> int:
    """Number of frames of the first video stream, counted from its packets."""
    with _open(path) as container:
        stream = container.streams.video[0]
        try:
            n = sum(1 for packet in container.demux(stream) if packet.size > 0)
        except av.FFmpegError as exc:
            raise DataError(f"cannot read video {path}: {exc}") from exc
    if n == 0:
        raise DataError(f"video {path} has no frames")
    if n == 1:
        raise DataError(f"video {path} has a single frame (a still image); actions need motion: 2 or more frames")
    return n


def read_frames(path: Path, indices: Sequence[int]) -> np.ndarray:
    """Frames `indices` (0-based, any order, repeats allowed) as (T, H, W, 3) uint8 RGB.

    Decodes sequentially up to the largest index, converting only the frames asked for.
    """
    wanted = frozenset(int(i) for i in indices)
    if not wanted:
        raise DataError(f"no frame indices given for {path}")
    if min(wanted) < 0:
        raise DataError(f"negative frame index {min(wanted)} for {path}")
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
            # A damaged tail: keep what decoded, the missing indices get the last good frame below.
    if last is None:
        raise DataError(f"video {path} has no decodable frames")
    last_index, last_frame = last
    if last_index < last_wanted and last_index not in kept:
        kept[last_index] = last_frame.to_ndarray(format="rgb24")
    out = [kept[min(int(i), last_index)] for i in indices]
    return np.stack(out)

