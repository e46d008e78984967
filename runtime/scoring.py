"""A video's model inputs and a runner's scores as labels: the steps `predict`, `timings`, `stream` and `explain`
share.

    feed = load_inputs(runner, "clip.mp4", num_clips=2)    # {input name: (V, ...)}, V views
    probs = softmax(class_scores(runner, feed)).mean(axis=0)  # (num_classes,)
    prediction = top_labels(runner, "clip.mp4", probs, 5, views=2)
"""

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aarm.errors import ConfigError
from runtime.runner import Runner


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


def class_scores(runner: Runner, feed: Mapping[str, np.ndarray]) -> np.ndarray:
    """The runner's class scores (N, num_classes) for `feed`: its "scores" output, else its first."""
    out = runner.infer(feed)
    return out["scores"] if "scores" in out else out[runner.output_names[0]]


def top_labels(runner: Runner, path: str | Path, probs: np.ndarray, k: int, views: int) -> Prediction:
    """The `k` most probable labels of `probs` (num_classes,), highest first (ties: the lower class index)."""
    k = min(k, probs.shape[-1])
    order = np.argsort(-probs, kind="stable")[:k]
    labels = [runner.classes[i] if i < len(runner.classes) else str(i) for i in order]
    return Prediction(path=str(path), labels=labels, indices=[int(i) for i in order],
                      scores=[float(probs[i]) for i in order], views=views)
