"""Optical flow extraction into TSN frame folders (OpenCV: TV-L1 where available, Farneback otherwise).

    extract_flow(Path("UCF101/UCF-101"), Path("UCF101-flow"), method="auto", bound=20)

Every video under VIDEO_ROOT (any depth) becomes OUT/<its folder relative to VIDEO_ROOT>/<stem>/ holding
`img_00001.jpg` ... (its N RGB frames) and `flow_x_00001.jpg`, `flow_y_00001.jpg` ... (the N - 1 flow
fields between consecutive frames). A flow value f (pixels per frame) is clipped to [-bound, bound] and
stored as gray round(255 * (f + bound) / (2 * bound)), so 128 is zero motion (TSN's dense_flow mapping).

Resumable: a video is written into a temporary folder that holds a `.done` marker (method, bound, counts)
before it is renamed into place, so an existing output folder with `.done` is complete and is skipped on a
rerun, and an interrupted one never looks complete. A rerun with another method or bound is refused.

OpenCV (opencv-python-headless, the `flow` extra) is imported only here.
"""

import json
import math
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np

from aarm.data.annotations import VIDEO_SUFFIXES
from aarm.data.frames import FLOW_X_TEMPLATE, FLOW_Y_TEMPLATE, RGB_TEMPLATE
from aarm.errors import BackendUnavailable, ConfigError, DataError
from aarm.progress import Progress

METHODS = ("auto", "tvl1", "farneback")
DONE = ".done"
JPEG_QUALITY = 95


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:
        raise BackendUnavailable(
            "optical flow needs OpenCV: pip install opencv-python-headless (the aarm[flow] extra)"
        ) from exc
    return cv2


def _tvl1_factory(cv2: Any) -> Any | None:
    """OpenCV's TV-L1 constructor: contrib's cv2.optflow first, then the old main-module name; None if absent."""
    optflow = getattr(cv2, "optflow", None)
    if optflow is not None and hasattr(optflow, "DualTVL1OpticalFlow_create"):
        return optflow.DualTVL1OpticalFlow_create
    return getattr(cv2, "DualTVL1OpticalFlow_create", None)


def available_methods() -> list[str]:
    """The flow methods this OpenCV build provides ("tvl1" needs opencv-contrib)."""
    cv2 = _cv2()
    return (["tvl1"] if _tvl1_factory(cv2) is not None else []) + ["farneback"]


def resolve_method(method: str) -> str:
    """"tvl1" or "farneback" for a requested method; "auto" prefers TV-L1."""
    if method not in METHODS:
        raise ConfigError(f"unknown flow method {method!r}; choose one of {', '.join(METHODS)}")
    available = available_methods()
    if method == "auto":
        return available[0]
    if method not in available:
        raise BackendUnavailable(
            f"flow method {method!r} is not in this OpenCV build (has {', '.join(available)}); "
            "TV-L1 needs opencv-contrib-python-headless"
        )
    return method


def quantize_flow(flow: np.ndarray, bound: float) -> np.ndarray:
    """float flow (pixels) -> uint8, clipped to +-bound, 128 = zero."""
    scaled = (np.clip(flow, -bound, bound) + bound) * (255.0 / (2.0 * bound))
    return np.floor(scaled + 0.5).astype(np.uint8)


class FlowComputer:
    """Dense flow between two gray uint8 frames: (H, W, 2) float32, channel 0 = x, 1 = y (pixels)."""

    def __init__(self, method: str) -> None:
        self.cv2 = _cv2()
        self.method = resolve_method(method)
        self._tvl1 = _tvl1_factory(self.cv2)() if self.method == "tvl1" else None

    def __call__(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        if self._tvl1 is not None:
            return self._tvl1.calc(prev, nxt, None)
        return self.cv2.calcOpticalFlowFarneback(prev, nxt, None, 0.5, 3, 15, 3, 5, 1.2, 0)


def _decode_all(path: Path) -> Iterator[np.ndarray]:
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(f"{path} has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
    except (av.FFmpegError, OSError) as exc:
        raise DataError(f"cannot decode video {path}: {exc}") from exc


def extract_video(video: Path, folder: Path, *, method: str = "auto", bound: float = 20.0) -> dict[str, Any]:
    """Write one video's frames and flow into `folder` (complete, with its `.done` marker, or not at all).
    Returns the marker's content."""
    computer = FlowComputer(method)
    cv2 = computer.cv2
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    try:
        prev = None
        frames = flows = 0
        for rgb in _decode_all(video):
            frames += 1
            if not cv2.imwrite(str(tmp / RGB_TEMPLATE.format(frames)), rgb[..., ::-1], params):
                raise DataError(f"cannot write {tmp / RGB_TEMPLATE.format(frames)}")
            gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
            if prev is not None:
                flow = quantize_flow(computer(prev, gray), bound)
                flows += 1
                cv2.imwrite(str(tmp / FLOW_X_TEMPLATE.format(flows)), flow[..., 0], params)
                cv2.imwrite(str(tmp / FLOW_Y_TEMPLATE.format(flows)), flow[..., 1], params)
            prev = gray
        if frames < 2:
            raise DataError(f"video {video} has {frames} decodable frame(s); flow needs at least 2")
        marker = {"video": str(video), "method": computer.method, "bound": bound, "frames": frames, "flows": flows}
        (tmp / DONE).write_text(json.dumps(marker) + "\n")
        if folder.exists():  # an interrupted run's leftovers, never a finished one (that has .done)
            shutil.rmtree(folder)
        os.replace(tmp, folder)
        return marker
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def find_videos(root: Path) -> list[Path]:
    """Video files under `root` (any depth; hidden folders skipped), sorted; `root` may be one video file."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise DataError(f"video root {root} does not exist")
    videos = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        videos += [Path(dirpath) / f for f in filenames if Path(f).suffix.lower() in VIDEO_SUFFIXES]
    return sorted(videos)


def output_folder(video: Path, video_root: Path, out: Path) -> Path:
    """OUT/<video's folder relative to VIDEO_ROOT>/<stem>."""
    video_root = Path(video_root)
    rel = Path(video.name) if video_root.is_file() else video.relative_to(video_root)
    return out / rel.parent / rel.stem


def read_marker(folder: Path) -> dict[str, Any] | None:
    marker = folder / DONE
    if not marker.is_file():
        return None
    try:
        return json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"unreadable marker {marker}: {exc}") from exc


@dataclass
class FlowSummary:
    """What extract_flow did: videos extracted now, skipped as already done, their frame/flow counts."""

    out: Path
    method: str
    bound: float
    extracted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    frames: int = 0
    flows: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out), "method": self.method, "bound": self.bound, "extracted": len(self.extracted),
            "skipped": len(self.skipped), "frames": self.frames, "flows": self.flows,
            "seconds": round(self.seconds, 3), "videos_extracted": self.extracted, "videos_skipped": self.skipped,
        }


def _extract_job(video: Path, folder: Path, method: str, bound: float) -> dict[str, Any]:
    _cv2().setNumThreads(1)
    return extract_video(video, folder, method=method, bound=bound)


def extract_flow(
    video_root: Path, out: Path, *, method: str = "auto", bound: float = 20.0, workers: int = 1,
    progress: Progress | None = None,
) -> FlowSummary:
    """Extract frames and flow of every video under `video_root` into `out` (see the module docstring);
    `progress` hears of each video done."""
    if not math.isfinite(bound) or bound <= 0:
        raise ConfigError(f"`bound` must be a finite number > 0, got {bound}")
    if workers < 1:
        raise ConfigError(f"`workers` must be >= 1, got {workers}")
    method = resolve_method(method)
    video_root, out = Path(video_root), Path(out)
    videos = find_videos(video_root)
    if not videos:
        raise DataError(f"no video files under {video_root}")
    start = time.perf_counter()
    summary = FlowSummary(out, method, bound)
    todo = []
    for video in videos:
        folder = output_folder(video, video_root, out)
        marker = read_marker(folder)
        if marker is None:
            todo.append((video, folder))
            continue
        if marker.get("method") != method or float(marker.get("bound", -1)) != bound:
            raise DataError(
                f"{folder} was extracted with method={marker.get('method')} bound={marker.get('bound')}, "
                f"not method={method} bound={bound}; use another OUT folder"
            )
        summary.skipped.append(str(video))
        summary.frames += int(marker.get("frames", 0))
        summary.flows += int(marker.get("flows", 0))

    def record(video: Path, marker: dict[str, Any]) -> None:
        summary.extracted.append(str(video))
        summary.frames += marker["frames"]
        summary.flows += marker["flows"]
        if progress is not None:
            progress(f"optical flow ({method})", len(summary.extracted), len(todo))

    if workers == 1:
        for video, folder in todo:
            record(video, extract_video(video, folder, method=method, bound=bound))
    else:
        # fork where there is one: children run PyAV and OpenCV only, and need no __main__ guard.
        context = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = {pool.submit(_extract_job, v, f, method, bound): v for v, f in todo}
            try:
                for future in as_completed(futures):
                    record(futures[future], future.result())
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise
    summary.seconds = time.perf_counter() - start
    return summary
