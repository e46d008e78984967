"""Action labels for a live or recorded video stream, window by window.

A decode thread reads the source with PyAV (a file, an RTSP/HTTP URL or a camera device) into a ring buffer
of RGB frames. Window j holds frames [j * stride, j * stride + window). When its last frame is decoded the
window goes to the inference worker (the caller's thread), which samples it exactly as `predict` samples a
file of those frames (TSN segments or a 3D clip from the runner's preprocessing, evaluation sampling, one
view), runs the runner, and takes the softmax.

Drop policy. A file read as fast as possible (not `realtime`) is lossless: the decoder waits while two
windows are pending, so every window is classified. A live source (URL, camera) or a file paced at its frame
rate (`realtime`) never waits for the model: the worker always takes the latest complete window, and a window
replaced before the worker took it is dropped (counted in the next result and in the summary). So a slow
model skips windows instead of falling behind; a window's lag (from its last frame's arrival to its result)
stays within about one window's processing time plus one stride.

Smoothing (`smooth` = N > 1): a window's reported scores are the mean of the softmax scores of the last N
classified windows, itself included (dropped windows have none); `raw` keeps its own.

Stage split per window, in milliseconds, with the stages of `runtime.timings` (as `predict --timings` and
`bench --videos`): `decode` is the time spent decoding and converting the frames that arrived since the
previous classified window (so the decode figures of all windows add up to the stream's decoding work),
`sampling` picking the window's frames, `preprocess` crop, resize and normalisation, `h2d` the input's
host-to-device copy where the runner exposes it (None on a CPU), `inference` the runner's call, `post`
softmax, smoothing and top-k.
"""

import contextlib
import math
import re
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import av
import numpy as np

from aarm.data.clips import StageFn, sample_indices
from aarm.data.preprocessing import Preprocessing
from aarm.data.transforms import eval_transform
from aarm.errors import ConfigError, DataError
from runtime.runner import Runner
from runtime.scoring import softmax
from runtime.timings import StageTimes, infer_staged, summarise

STREAM_VERSION = 1
_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([sf])\s*$")


@dataclass(frozen=True)
class Span:
    """A length of stream: `value` seconds (unit "s") or frames (unit "f")."""

    value: float
    unit: str

    def frames(self, fps: float | None, what: str) -> int:
        """The span in whole frames (seconds times `fps`, rounded to the nearest frame, halves up)."""
        if self.unit == "f":
            return int(self.value)
        if not fps:
            raise ConfigError(f"the source has no known frame rate; give --{what} in frames (e.g. 64f)")
        return max(1, math.floor(self.value * fps + 0.5))

    def __str__(self) -> str:
        return f"{self.value:g}{self.unit}"


def parse_span(text: str, what: str = "window") -> Span:
    """'2s' / '2.5s' (seconds) or '64f' (frames) -> Span; zero or anything else is a ConfigError."""
    m = _SPAN.match(str(text))
    if not m:
        raise ConfigError(f"`{what}` {text!r}: expected seconds like 2s or frames like 64f")
    value, unit = float(m.group(1)), m.group(2)
    if value <= 0 or (unit == "f" and value != int(value)):
        raise ConfigError(f"`{what}` {text!r}: must be a positive time or a whole number of frames")
    return Span(value, unit)


def min_window_frames(preprocessing: Preprocessing) -> int:
    """Fewest frames a window needs so sampling never repeats a frame: K (TSN) or (T - 1) * stride + 1 (3D)."""
    if preprocessing.layout == "NKCHW":
        return preprocessing.segments
    return (preprocessing.frames - 1) * preprocessing.stride + 1


def window_input(frames: Sequence[np.ndarray] | np.ndarray, preprocessing: Preprocessing,
                 stage: StageFn | None = None) -> np.ndarray:
    """The evaluation input of one window, as `load_video_input(file of these frames, p, num_clips=1)` gives it.

    frames: N uint8 (H, W, 3) RGB frames (a list or an (N, H, W, 3) array); only the sampled ones are copied.
    Returns float32 (1, K, 3, S, S) for NKCHW or (1, 3, T, S, S) for NCTHW. `stage(name)` wraps the
    "sampling" and "preprocess" steps (`runtime.timings.StageTimes.stage`).
    """
    p = preprocessing
    stage = stage or (lambda name: contextlib.nullcontext())
    with stage("sampling"):
        indices = sample_indices(len(frames), p, train=False, num_clips=1)  # (1, K, 1) or (1, T)
        picked = np.stack([frames[i] for i in indices.reshape(-1).tolist()])  # one frame per snippet or clip step
    with stage("preprocess"):
        x = eval_transform(picked, p.size, p.scale_size, mean=p.mean, std=p.std)  # (K or T, 3, S, S)
        x = x.reshape(1, picked.shape[0], *x.shape[1:])
        if p.layout == "NCTHW":
            x = x.permute(0, 2, 1, 3, 4)
        return x.contiguous().numpy()


# ---------------------------------------------------------------------------------------------- source


@dataclass(frozen=True)
class SourceInfo:
    """What the opened source says about itself."""

    source: str
    kind: str  # file | url | device
    fps: float | None
    width: int
    height: int
    live: bool  # windows may be dropped (a URL, a device, or a file paced in real time)


def _source_kind(source: str) -> str:
    if "://" in source:
        return "url"
    if source.startswith("/dev/"):
        return "device"
    return "file"


def open_source(
    source: str, *, input_format: str | None = None, timeout: float = 10.0, listen: bool = False
) -> tuple["av.container.InputContainer", str]:
    """Open a file, URL or device with PyAV; one-line DataError when it cannot be opened or has no video.

    RTSP goes over TCP. `listen` (rtsp:// only): wait up to `timeout` seconds for a publisher to push to
    this address (FFmpeg's rtsp_flags=listen), e.g. `ffmpeg -re -i clip.mp4 -f rtsp rtsp://127.0.0.1:8554/live`.
    """
    kind = _source_kind(source)
    if kind == "file" and not Path(source).is_file():
        raise DataError(f"video {source} not found")
    options = {"rtsp_transport": "tcp"} if source.startswith("rtsp") else {}
    if listen:
        if not source.startswith("rtsp://"):
            raise ConfigError(f"`listen` needs an rtsp:// address to listen on, got {source}")
        options |= {"rtsp_flags": "listen", "listen_timeout": str(max(1, round(timeout)))}
    fmt = input_format or ("v4l2" if kind == "device" else None)
    try:
        container = av.open(source, format=fmt, options=options, timeout=(timeout, timeout))
    except (av.FFmpegError, OSError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise DataError(f"cannot open {source}: {reason}") from exc
    if not container.streams.video:
        container.close()
        raise DataError(f"{source} has no video stream")
    return container, kind


# ---------------------------------------------------------------------------------------------- stream


@dataclass
class Window:
    """A complete window, as the decoder hands it over."""

    index: int
    first_frame: int
    frames: list[np.ndarray]
    start_s: float
    end_s: float
    arrived: float  # perf_counter when its last frame was decoded
    decode_s: float  # decoding time of the frames since the previous window handed over


@dataclass
class WindowResult:
    """One classified window. `scores` are smoothed when smoothing is on; `probs` the full (num_classes,) vector
    reported, `raw` the window's own softmax."""

    window: int
    start_s: float
    end_s: float
    first_frame: int
    last_frame: int
    labels: list[str]
    indices: list[int]
    scores: list[float]
    dropped: int  # windows dropped since the previous result
    lag_ms: float
    latency_ms: dict[str, float | None]  # per stage of runtime.timings.STAGES (None: not measured), and total
    probs: np.ndarray = field(repr=False)
    raw: np.ndarray = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("probs", "raw"):
            d.pop(key)
        d["top_k"] = [{"label": lab, "index": i, "score": s}
                      for lab, i, s in zip(d.pop("labels"), d.pop("indices"), d.pop("scores"), strict=True)]
        return {"kind": "window", **d}


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


@dataclass
class StreamSummary:
    """Totals of a stream: windows classified and dropped, lag and the stage split (p50/p99 ms, share)."""

    windows: int = 0
    dropped: int = 0
    frames: int = 0
    wall_s: float = 0.0
    lag_ms: list[float] = field(default_factory=list)
    stages: list[StageTimes] = field(default_factory=list)
    dropped_windows: list[int] = field(default_factory=list)

    def add(self, result: WindowResult, times: StageTimes) -> None:
        self.windows += 1
        self.lag_ms.append(result.lag_ms)
        self.stages.append(times)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "summary",
            "windows": self.windows,
            "dropped": self.dropped,
            "dropped_windows": self.dropped_windows,
            "frames": self.frames,
            "wall_s": round(self.wall_s, 3),
            "lag_ms": {"p50": _percentile(self.lag_ms, 50), "p99": _percentile(self.lag_ms, 99),
                       "max": max(self.lag_ms) if self.lag_ms else None},
            **{k: v for k, v in summarise(self.stages).items() if k in ("stages_ms", "total_ms")},
        }


class _Handoff:
    """Windows from the decoder to the worker: a bounded queue (lossless) or a latest-only slot (live)."""

    def __init__(self, live: bool, stop: threading.Event) -> None:
        self.live, self.stop = live, stop
        self.cond = threading.Condition()
        self.pending: deque[Window] = deque()
        self.closed = False
        self.error: BaseException | None = None
        self.dropped: list[int] = []

    def put(self, w: Window) -> None:
        with self.cond:
            if self.live:
                while self.pending:
                    old = self.pending.popleft()
                    self.dropped.append(old.index)
                    w.decode_s += old.decode_s  # its frames were decoded all the same
            else:
                while len(self.pending) >= 2 and not self.stop.is_set():
                    self.cond.wait(0.1)
            self.pending.append(w)
            self.cond.notify_all()

    def close(self, error: BaseException | None = None) -> None:
        with self.cond:
            self.closed, self.error = True, error
            self.cond.notify_all()

    def get(self) -> tuple[Window | None, list[int]]:
        """The next window (None at the end) and the windows dropped since the last get."""
        with self.cond:
            while not self.pending and not self.closed:
                self.cond.wait(0.1)
            if self.error is not None:
                raise self.error
            w = self.pending.popleft() if self.pending else None
            dropped, self.dropped = self.dropped, []
            self.cond.notify_all()
            return w, dropped


class VideoStream:
    """Classify a video source window by window; iterate it for WindowResults, then read `summary`.

        with runner, VideoStream(runner, "cam.mp4", window=parse_span("2s"), stride=parse_span("1s")) as s:
            for result in s: ...

    explain: a folder that gets each window's STAM maps and CAM weights as window_NNNNN.png (`runtime.explain`;
    the artifact needs attention outputs). They are drawn after the window's timed stages, running the graph a
    second time, so a window's lag includes the drawing and a live source drops more windows.
    """

    def __init__(
        self,
        runner: Runner,
        source: str | Path,
        *,
        window: Span,
        stride: Span,
        top_k: int = 5,
        smooth: int = 1,
        realtime: bool = False,
        max_windows: int | None = None,
        input_format: str | None = None,
        timeout: float = 10.0,
        listen: bool = False,
        explain: Path | None = None,
    ) -> None:
        if top_k < 1 or smooth < 1:
            raise ConfigError("`top_k` and `smooth` must be >= 1")
        if max_windows is not None and max_windows < 1:
            raise ConfigError("`max_windows` must be >= 1")
        if len(runner.preprocessing) != 1 or len(runner.input_specs) != 1:
            raise ConfigError(f"{runner.name}: streaming needs a single-input model with recorded preprocessing")
        self.prep = runner.preprocessing[0]
        if self.prep.modality != "rgb":
            raise ConfigError(f"{runner.name}: streaming decodes RGB frames; a {self.prep.modality} model needs "
                              "precomputed flow")
        self.runner, self.top_k, self.smooth, self.max_windows = runner, top_k, smooth, max_windows
        self.explain = Path(explain) if explain is not None else None
        if self.explain is not None:
            from runtime.explain import require_attention

            require_attention(runner)  # a graph without attention outputs: one line, before the source opens
        self.source = str(source)
        self.container, kind = open_source(self.source, input_format=input_format, timeout=timeout,
                                             listen=listen)
        try:
            vs = self.container.streams.video[0]
            rate = vs.average_rate or vs.guessed_rate
            fps = float(rate) if rate else None
            self.window_frames = window.frames(fps, "window")
            self.stride_frames = stride.frames(fps, "stride")
            need = min_window_frames(self.prep)
            if self.window_frames < need:
                raise ConfigError(f"`window` {window} is {self.window_frames} frames; the model samples "
                                  f"{need} ({self._sampling()}), so a window needs at least {need} frames")
            live = kind != "file" or realtime
            if realtime and kind == "file" and not fps:
                raise ConfigError(f"{self.source}: no frame rate to pace `realtime` at")
        except BaseException:
            self.container.close()
            raise
        self.realtime = realtime and kind == "file"
        self.info = SourceInfo(self.source, kind, fps, vs.codec_context.width, vs.codec_context.height, live)
        self.summary = StreamSummary()
        self._stop = threading.Event()
        self._handoff = _Handoff(live, self._stop)
        self._thread: threading.Thread | None = None

    def _sampling(self) -> str:
        p = self.prep
        if p.layout == "NKCHW":
            return f"TSN, {p.segments} segments"
        return f"3D clip, {p.frames} frames every {p.stride}"

    def describe(self) -> dict[str, Any]:
        """The stream's header line: source, artifact, window rules."""
        return {
            "kind": "stream",
            "version": STREAM_VERSION,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "source": asdict(self.info),
            "artifact": self.runner.describe(),
            "sampling": self._sampling(),
            "window_frames": self.window_frames,
            "stride_frames": self.stride_frames,
            "drop_policy": "latest window; older pending windows dropped" if self.info.live else "lossless",
            "smoothing": (f"mean of the softmax scores of the last {self.smooth} classified windows"
                          if self.smooth > 1 else "none"),
        }

    # -- decoder thread ----------------------------------------------------------------------------
    def _decode(self) -> None:
        try:
            self._decode_loop()
        except (av.FFmpegError, OSError) as exc:
            self._handoff.close(DataError(f"cannot decode {self.source}: {exc}"))
        except BaseException as exc:  # noqa: BLE001 - handed to the worker thread, which raises it
            self._handoff.close(exc)
        else:
            self._handoff.close()

    def _decode_loop(self) -> None:
        vs = self.container.streams.video[0]
        vs.thread_type = "AUTO"
        fps = self.info.fps
        ring: deque[tuple[np.ndarray, float]] = deque(maxlen=self.window_frames)
        first_time: float | None = None
        decode_s, index, t0 = 0.0, 0, time.perf_counter()
        frames = self.container.decode(vs)
        while not self._stop.is_set():
            tic = time.perf_counter()
            frame = next(frames, None)
            if frame is None:
                break
            rgb = frame.to_ndarray(format="rgb24")
            decode_s += time.perf_counter() - tic
            t = frame.time
            if t is None:
                t = index / fps if fps else float(index)
            if first_time is None:
                first_time = t
            t -= first_time
            if self.realtime:  # the frame arrives at its presentation time
                delay = t0 + t - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            ring.append((rgb, t))
            self.summary.frames = index + 1
            start = index + 1 - self.window_frames
            if start >= 0 and start % self.stride_frames == 0:
                end_s = t + (1.0 / fps if fps else 0.0)
                self._handoff.put(Window(start // self.stride_frames, start, [f for f, _ in ring], ring[0][1],
                                         end_s, time.perf_counter(), decode_s))
                decode_s = 0.0
            index += 1

    # -- worker ------------------------------------------------------------------------------------
    def __enter__(self) -> "VideoStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop decoding and release the source."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.container.close()

    def classify(self, w: Window, recent: deque[np.ndarray], times: StageTimes | None = None) -> WindowResult:
        """Sample, preprocess, infer and post-process one window; `recent` holds the last softmax vectors.
        Its stage split goes into `times` (and the result's latency_ms)."""
        spec = self.runner.input_specs[0]
        times = times if times is not None else StageTimes()
        times.add("decode", w.decode_s * 1e3)
        x = window_input(w.frames, self.prep, times.stage)
        with times.stage("preprocess"):
            x = np.ascontiguousarray(x, dtype=spec.dtype)
        scores = infer_staged(self.runner, {spec.name: x}, times)
        with times.stage("post"):
            raw = softmax(scores)[0]
            recent.append(raw)
            probs = np.mean(recent, axis=0) if self.smooth > 1 else raw
            order = np.argsort(-probs, kind="stable")[: min(self.top_k, probs.shape[-1])]
        if self.explain is not None:  # after the timed stages: the graph runs again for its maps, then the drawing
            from runtime.explain import explain_feed

            explain_feed(self.runner, {spec.name: x}, self.explain / f"window_{w.index:05d}.png",
                         title=f"window {w.index}: {w.start_s:.2f}-{w.end_s:.2f} s")
        classes = self.runner.classes
        done = time.perf_counter()
        return WindowResult(
            window=w.index, start_s=round(w.start_s, 6), end_s=round(w.end_s, 6), first_frame=w.first_frame,
            last_frame=w.first_frame + len(w.frames) - 1,
            labels=[classes[i] if i < len(classes) else str(i) for i in order], indices=[int(i) for i in order],
            scores=[float(probs[i]) for i in order], dropped=0, lag_ms=round((done - w.arrived) * 1e3, 3),
            latency_ms=times.to_json(), probs=probs, raw=raw,
        )

    def __iter__(self) -> Iterator[WindowResult]:
        """Classify windows until the source ends, `max_windows` are done or `close()` is called.
        The runner must be active."""
        if self._thread is not None:
            raise ConfigError("a stream can be iterated once")
        recent: deque[np.ndarray] = deque(maxlen=self.smooth)
        start = time.perf_counter()
        self._thread = threading.Thread(target=self._decode, name="aarm-stream-decode", daemon=True)
        self._thread.start()
        try:
            while True:
                w, dropped = self._handoff.get()
                self.summary.dropped += len(dropped)
                self.summary.dropped_windows.extend(dropped)
                if w is None:
                    break
                times = StageTimes()
                result = self.classify(w, recent, times)
                result.dropped = len(dropped)
                self.summary.add(result, times)
                self.summary.wall_s = time.perf_counter() - start
                yield result
                if self.max_windows is not None and self.summary.windows >= self.max_windows:
                    break
        finally:
            self.summary.wall_s = time.perf_counter() - start
            self.close()


def result_row(r: WindowResult) -> tuple[str, ...]:
    """A window as a table row: window, time, top label and score, lag, total ms, dropped."""
    top = f"{r.labels[0]} {r.scores[0]:.3f}" if r.labels else "-"
    return (str(r.window), f"{r.start_s:.2f}-{r.end_s:.2f}s", top, f"{r.lag_ms:.0f}",
            f"{r.latency_ms['total']:.0f}", str(r.dropped))
