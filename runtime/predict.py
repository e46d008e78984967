"""Action labels for video files: decode, sample and preprocess as the model was trained, run in batches.

The preprocessing comes from the runner (the artifact's sidecar or the checkpoint), one per model input
(two-stream models: RGB and flow), through `aarm.data.clips.load_video_input`. A video of V views
(`num_clips`) is scored as the mean of the views' softmax probabilities. One runner may be shared by
several threads: `predict_video` holds no state of its own.
"""

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from aarm.errors import ConfigError
from runtime.runner import Runner

PREDICT_VERSION = 1


@dataclass
class Prediction:
    """Top-k labels of one video, highest first, with their probabilities (mean over `views`)."""

    path: str
    labels: list[str]
    indices: list[int]
    scores: list[float]
    views: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def softmax(scores: np.ndarray) -> np.ndarray:
    """Softmax over the last axis of (N, num_classes) scores, in float64."""
    z = np.asarray(scores, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def load_inputs(runner: Runner, path: str | Path, num_clips: int = 1, *,
                stage: Callable[[str], AbstractContextManager[Any]] | None = None) -> dict[str, np.ndarray]:
    """Every model input of one video: {input name: (V, ...)} with V = num_clips views, in the runner's dtypes.
    `stage(name)` wraps each step (decode, sampling, preprocess), as `runtime.timings.StageTimes.stage` does."""
    from aarm.data.clips import load_video_input

    if not runner.preprocessing or len(runner.preprocessing) != len(runner.input_specs):
        raise ConfigError(f"{runner.name}: no preprocessing recorded for its inputs; cannot decode video for it")
    feed = {}
    for spec, prep in zip(runner.input_specs, runner.preprocessing, strict=True):
        x = load_video_input(path, prep, num_clips=num_clips, stage=stage)
        with stage("preprocess") if stage else nullcontext():
            feed[spec.name] = np.ascontiguousarray(np.asarray(x), dtype=spec.dtype)
    return feed


def _top_k(runner: Runner, path: str | Path, probs: np.ndarray, top_k: int, views: int) -> Prediction:
    k = min(top_k, probs.shape[-1])
    order = np.argsort(-probs, kind="stable")[:k]
    labels = [runner.classes[i] if i < len(runner.classes) else str(i) for i in order]
    return Prediction(path=str(path), labels=labels, indices=[int(i) for i in order],
                      scores=[float(probs[i]) for i in order], views=views)


def _scores(runner: Runner, feed: dict[str, np.ndarray]) -> np.ndarray:
    out = runner.infer(feed)
    return out["scores"] if "scores" in out else out[runner.output_names[0]]


def predict_video(runner: Runner, path: str | Path, *, top_k: int = 5, num_clips: int = 1) -> Prediction:
    """Top-k labels of one video (the runner must be active). Safe to call from several threads."""
    feed = load_inputs(runner, path, num_clips)
    probs = softmax(_scores(runner, feed)).mean(axis=0)
    return _top_k(runner, path, probs, top_k, views=next(iter(feed.values())).shape[0])


def predict_videos(
    runner: Runner,
    videos: Sequence[str | Path],
    *,
    top_k: int = 5,
    batch: int = 8,
    num_clips: int = 1,
    workers: int = 2,
    progress: Callable[[int], None] | None = None,
) -> list[Prediction]:
    """Top-k labels of each video, in order. Videos are decoded by `workers` threads while the runner
    works through batches of up to `batch` clips (views of several videos share a batch). Preprocessing runs
    on one PyTorch thread unless the runner is a PyTorch one (`runtime.timings.preprocessing_threads`)."""
    if top_k < 1 or batch < 1 or num_clips < 1 or workers < 1:
        raise ConfigError("top_k, batch, num_clips and workers must be >= 1")
    results: list[Prediction | None] = [None] * len(videos)
    pending: list[tuple[int, dict[str, np.ndarray]]] = []

    def flush() -> None:
        names = [s.name for s in runner.input_specs]
        all_views = {n: np.concatenate([f[n] for _, f in pending]) for n in names}
        probs_all = []
        total = next(iter(all_views.values())).shape[0]
        for start in range(0, total, batch):
            probs_all.append(softmax(_scores(runner, {n: a[start:start + batch] for n, a in all_views.items()})))
        probs = np.concatenate(probs_all)
        offset = 0
        for i, f in pending:
            v = next(iter(f.values())).shape[0]
            results[i] = _top_k(runner, videos[i], probs[offset:offset + v].mean(axis=0), top_k, views=v)
            offset += v
        if progress is not None:
            progress(len(pending))
        pending.clear()

    from runtime.timings import preprocessing_threads

    with runner, preprocessing_threads([runner]), ThreadPoolExecutor(max_workers=workers) as pool:
        feeds = pool.map(lambda p: load_inputs(runner, p, num_clips), videos)
        queued = 0
        for i, feed in enumerate(feeds):
            pending.append((i, feed))
            queued += next(iter(feed.values())).shape[0]
            if queued >= batch:
                flush()
                queued = 0
        if pending:
            flush()
    return [r for r in results if r is not None]


def predictions_to_json(runner: Runner, predictions: Sequence[Prediction]) -> dict[str, Any]:
    return {
        "kind": "predict",
        "version": PREDICT_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "artifact": runner.describe(),
        "predictions": [p.to_dict() for p in predictions],
    }
