"""Where the time of a prediction goes, stage by stage: one vocabulary for `predict --timings`,
`bench --videos` and `stream`.

Stages, in milliseconds per item (a video, or a stream window):

    decode      counting the frames (a demux pass), seeking, decoding and RGB conversion of the frames read
    sampling    choosing the frame indices and arranging the frames per view
    preprocess  resize, centre crop, normalisation, layout and the cast to the model's dtype
    h2d         the input's host-to-device copy: PyTorch runners on a GPU; "n/a" on a CPU runner, and
                counted in `inference` for backends that copy inside their call (onnxruntime CUDA, TensorRT)
    inference   the runner's call (with the scores' copy back to the host)
    post        softmax, mean over views or smoothing, top-k

A summary gives each stage's p50 and p99 over the items and its share of the sum of every stage's total.

    times = StageTimes()
    prediction = predict_timed(runner, "clip.mp4", times)
    summary = summarise([times])                       # {"items": 1, "stages_ms": {...}, "total_ms": {...}}
"""

import functools
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from aarm.errors import ConfigError
from aarm.progress import Progress
from runtime.bench import switch_to
from runtime.runner import Runner
from runtime.scoring import Prediction, class_scores, load_inputs, softmax, top_labels

STAGES = ("decode", "sampling", "preprocess", "h2d", "inference", "post")
LABELS = {"decode": "decode", "sampling": "sampling", "preprocess": "preprocessing", "h2d": "host-to-device copy",
          "inference": "inference", "post": "post-processing"}


class StageTimes:
    """Milliseconds spent in each stage on one item; `not_measured` says why a stage has no figure."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}
        self.not_measured: dict[str, str] = {}

    def add(self, name: str, ms: float) -> None:
        if name not in STAGES:
            raise ConfigError(f"unknown stage {name!r}; stages are {', '.join(STAGES)}")
        self.ms[name] = self.ms.get(name, 0.0) + ms

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block and add it to stage `name` (several blocks of one stage add up)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, (time.perf_counter() - start) * 1e3)

    def skip(self, name: str, reason: str) -> None:
        """Record that stage `name` is not measured on this item, and why."""
        self.not_measured[name] = reason

    @property
    def total(self) -> float:
        return float(sum(self.ms.values()))

    def to_json(self) -> dict[str, float | None]:
        """{stage: ms rounded to µs, None where not measured, ..., "total": ms}."""
        out: dict[str, float | None] = {s: round(self.ms[s], 3) if s in self.ms else None for s in STAGES}
        out["total"] = round(self.total, 3)
        return out


def _percentile(values: Sequence[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if len(values) else None


def summarise(items: Sequence[StageTimes]) -> dict[str, Any]:
    """p50 / p99 (ms) of each stage over `items` and its share of the sum of all stages; a stage no item
    measured has None figures and a `note` saying why."""
    stages: dict[str, dict[str, Any]] = {}
    totals = {s: float(sum(t.ms.get(s, 0.0) for t in items)) for s in STAGES}
    grand = sum(totals.values())
    for s in STAGES:
        values = [t.ms[s] for t in items if s in t.ms]
        row: dict[str, Any] = {"p50": _percentile(values, 50), "p99": _percentile(values, 99),
                               "share": round(totals[s] / grand, 4) if values and grand > 0 else None}
        if not values:
            reasons = sorted({t.not_measured[s] for t in items if s in t.not_measured})
            row["note"] = "; ".join(reasons) or "not measured"
        stages[s] = row
    whole = [t.total for t in items]
    return {"items": len(items), "stages_ms": stages,
            "total_ms": {"p50": _percentile(whole, 50), "p99": _percentile(whole, 99)}}


STAGE_COLUMNS = ["stage", "p50 ms", "p99 ms", "share %", "note"]


def stage_rows(summary: Mapping[str, Any]) -> list[tuple[str, ...]]:
    """Table rows (STAGE_COLUMNS) of a `summarise` result: "n/a" and the reason for an unmeasured stage,
    then the total (sum of the stages per item)."""
    rows: list[tuple[str, ...]] = []
    for s, row in summary["stages_ms"].items():
        if row["p50"] is None:
            rows.append((LABELS.get(s, s), "n/a", "n/a", "n/a", row.get("note", "")))
        else:
            share = "-" if row["share"] is None else f"{100 * row['share']:.1f}"
            rows.append((LABELS.get(s, s), f"{row['p50']:.2f}", f"{row['p99']:.2f}", share, ""))
    total = summary.get("total_ms") or {}
    if total.get("p50") is not None:
        rows.append(("total", f"{total['p50']:.2f}", f"{total['p99']:.2f}", "100.0", "sum of the stages"))
    return rows


@contextmanager
def preprocessing_threads(runners: Sequence[Runner], threads: int = 1) -> Iterator[None]:
    """PyTorch intra-op threads for crop, resize and normalisation, while no runner is a PyTorch one (whose
    inference shares them); restored after. A few frames gain nothing from more threads, and on a busy
    machine every parallel region waits for descheduled threads: the demo's model (3 frames of 80 px) under
    load spent p50 121 ms preprocessing a video with 2 threads, 0.95 ms with 1 (`bench --videos`). The
    values computed are the same at any thread count. Threads started inside the block inherit the setting."""
    if any(r.backend == "torch" for r in runners):
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------ timed inference


def infer_staged(runner: Runner, feed: Mapping[str, np.ndarray], times: StageTimes) -> np.ndarray:
    """The runner's scores (N, num_classes) for `feed`, timing "h2d" apart from "inference" where the
    backend lets it (a PyTorch runner on a GPU: copy, then forward, each synchronised)."""
    if not runner.is_active:
        raise ConfigError(f"runner {runner.name} is not active; use it in a `with` block or call activate()")
    if runner.device == "cpu":
        times.skip("h2d", "CPU runner: no host-to-device copy")
        with times.stage("inference"):
            return class_scores(runner, feed)
    if runner.backend == "torch" and hasattr(runner, "to_device") and hasattr(runner, "forward"):
        import torch

        checked = runner.check_feed(feed)
        with times.stage("h2d"):
            x = runner.to_device(checked[runner.input_specs[0].name])  # type: ignore[attr-defined]
            torch.cuda.synchronize(x.device)
        with times.stage("inference"):
            return runner.forward(x).float().cpu().numpy()  # type: ignore[attr-defined]
    times.skip("h2d", f"{runner.backend} copies inside its call: counted in inference")
    with times.stage("inference"):
        return class_scores(runner, feed)


def predict_timed(runner: Runner, path: str | Path, times: StageTimes, *, top_k: int = 5,
                  num_clips: int = 1) -> Prediction:
    """`runtime.predict.predict_video` of one video with every stage timed into `times`; the runner must be
    active."""
    feed = load_inputs(runner, path, num_clips, stage=times.stage)
    scores = infer_staged(runner, feed, times)
    with times.stage("post"):
        probs = softmax(scores).mean(axis=0)
        return top_labels(runner, path, probs, top_k, views=next(iter(feed.values())).shape[0])


def predict_videos_timed(runner: Runner, videos: Sequence[str | Path], *, top_k: int = 5, num_clips: int = 1,
                         progress: Progress | None = None) -> tuple[list[Prediction], list[StageTimes]]:
    """Predictions of each video, one at a time (its views are one batch; no decoding threads, so no stage
    overlaps another), with each video's StageTimes. progress: `progress("predicting", videos done, videos)`."""
    predictions: list[Prediction] = []
    times: list[StageTimes] = []
    with runner, preprocessing_threads([runner]):
        for path in videos:
            t = StageTimes()
            predictions.append(predict_timed(runner, path, t, top_k=top_k, num_clips=num_clips))
            times.append(t)
            if progress is not None:
                progress("predicting", len(times), len(videos))
    return predictions, times


def _video_ms(runner: Runner, path: str | Path) -> float:
    start = time.perf_counter()
    predict_timed(runner, path, StageTimes())
    return (time.perf_counter() - start) * 1e3


def video_stage_bench(
    runners: Sequence[Runner], videos: Sequence[str | Path], *, rounds: int = 10, warmup: int = 1,
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """End-to-end stage split of each runner over real video files: every round runs every video through
    every runner (the runners' order rotating per round, so load drifts hit them alike), after `warmup`
    untimed videos per runner and, at each switch, the bench's idle time and untimed videos
    (`runtime.bench.switch_to`). One summary per runner: {name, provider, device, videos, rounds, ...summarise}.
    progress: `progress("videos: <runner name>", rounds done, rounds)` after each runner's share of a round."""
    if not videos:
        raise ConfigError("no videos to time")
    if rounds < 1 or warmup < 0:
        raise ConfigError("rounds must be >= 1 and warmup >= 0")
    per_runner: list[list[StageTimes]] = [[] for _ in runners]
    for r in runners:
        r.activate()
    try:
        with preprocessing_threads(runners):
            for r in runners:
                for i in range(warmup):
                    predict_timed(r, videos[i % len(videos)], StageTimes())
            previous = None
            for rnd in range(rounds):
                shift = rnd % len(runners)
                for k in [*range(shift, len(runners)), *range(shift)]:
                    if previous != k:  # the bench's switch: idle, then untimed videos for SWITCH_WARM_S
                        switch_to(functools.partial(_video_ms, runners[k], videos[0]))
                    previous = k
                    for path in videos:
                        t = StageTimes()
                        predict_timed(runners[k], path, t)
                        per_runner[k].append(t)
                    if progress is not None:
                        progress(f"videos: {runners[k].name}", rnd + 1, rounds)
    finally:
        for r in runners:
            r.deactivate()
    return [{"name": r.name, "provider": r.provider, "device": r.device, "videos": len(videos), "rounds": rounds,
             **summarise(per_runner[k])} for k, r in enumerate(runners)]
