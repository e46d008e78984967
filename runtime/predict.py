"""Action labels for video files: decode, sample and preprocess as the model was trained, run in batches.

The preprocessing comes from the runner (the artifact's sidecar or the checkpoint), one per model input
(two-stream models: RGB and flow), through `aarm.data.clips.load_video_input`. A video of V views
(`num_clips`) is scored as the mean of the views' softmax probabilities. One runner may be shared by
several threads: `predict_video` holds no state of its own.
"""

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from aarm.errors import ConfigError
from aarm.progress import Progress
from runtime.runner import Runner
from runtime.scoring import Prediction, class_scores, load_inputs, softmax, top_labels
from runtime.timings import preprocessing_threads

PREDICT_VERSION = 1


def predict_video(runner: Runner, path: str | Path, *, top_k: int = 5, num_clips: int = 1) -> Prediction:
    """Top-k labels of one video (the runner must be active). Safe to call from several threads."""
    feed = load_inputs(runner, path, num_clips)
    probs = softmax(class_scores(runner, feed)).mean(axis=0)
    return top_labels(runner, path, probs, top_k, views=next(iter(feed.values())).shape[0])


def predict_videos(
    runner: Runner,
    videos: Sequence[str | Path],
    *,
    top_k: int = 5,
    batch: int = 8,
    num_clips: int = 1,
    workers: int = 2,
    progress: Progress | None = None,
) -> list[Prediction]:
    """Top-k labels of each video, in order. Videos are decoded by `workers` threads while the runner
    works through batches of up to `batch` clips (views of several videos share a batch). Preprocessing runs
    on one PyTorch thread unless the runner is a PyTorch one (`runtime.timings.preprocessing_threads`).
    progress: `progress("predicting", videos done, videos)` after each batch."""
    if top_k < 1 or batch < 1 or num_clips < 1 or workers < 1:
        raise ConfigError("top_k, batch, num_clips and workers must be >= 1")
    results: list[Prediction | None] = [None] * len(videos)
    pending: list[tuple[int, dict[str, np.ndarray]]] = []
    done = 0

    def flush() -> None:
        nonlocal done
        names = [s.name for s in runner.input_specs]
        all_views = {n: np.concatenate([f[n] for _, f in pending]) for n in names}
        probs_all = []
        total = next(iter(all_views.values())).shape[0]
        for start in range(0, total, batch):
            probs_all.append(softmax(class_scores(runner, {n: a[start:start + batch] for n, a in all_views.items()})))
        probs = np.concatenate(probs_all)
        offset = 0
        for i, f in pending:
            v = next(iter(f.values())).shape[0]
            results[i] = top_labels(runner, videos[i], probs[offset:offset + v].mean(axis=0), top_k, views=v)
            offset += v
        done += len(pending)
        if progress is not None:
            progress("predicting", done, len(videos))
        pending.clear()

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
