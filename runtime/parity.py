"""Numerical parity of an artifact with its PyTorch reference, on random inputs and on labelled clips.

    result = compare(open_runner("model.int8.onnx"), open_runner("model.pt"), samples=32)
    if not result: print(result.failures)            # truthy when every tolerance holds (Polygraphy style)

Metrics on the "scores" output (N, num_classes): max absolute error, relative error (max abs error over
the reference's largest magnitude, so it is defined where scores cross zero), the smallest per-sample
cosine similarity, top-1 and top-5 agreement (share of samples whose top-1 class / top-5 set match) and,
on labelled clips, the accuracy of each and their difference. Default tolerances follow the artifact's
precision; every one can be overridden.
"""

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from aarm.errors import AarmError, ArtifactError, ConfigError, DataError
from runtime.runner import Runner

PARITY_VERSION = 1


class ParityFailure(AarmError):
    """An artifact whose outputs differ from its reference beyond the tolerances."""


@dataclass(frozen=True)
class Tolerances:
    """Limits a parity check enforces; None leaves a metric unchecked. `gate_random` False: with labelled
    data given, random-input metrics are reported but not enforced (INT8: calibration fits ranges to real
    clips, and standard-normal noise falls outside them by design; FP16: noise gives near-tied scores
    whose top-1 flips under rounding)."""

    max_abs: float | None = None
    max_rel: float | None = None
    min_cosine: float | None = None
    min_mean_cosine: float | None = None
    min_top1: float | None = None
    min_top5: float | None = None
    max_accuracy_drop: float | None = None
    gate_random: bool = True

    def override(self, **changes: float | None) -> "Tolerances":
        """A copy with the given limits replaced (None values in `changes` are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


DEFAULT_TOLERANCES: dict[str, Tolerances] = {
    # fp32: the same maths in another order; anything beyond rounding is a bug.
    "fp32": Tolerances(max_abs=1e-4, max_rel=1e-4, min_cosine=0.99999, min_top1=1.0, min_top5=1.0,
                       max_accuracy_drop=0.0),
    # fp16: ~3 significant digits per op; near-ties may flip, and noise inputs give near-ties, so with real
    # clips to judge by, noise metrics are reported only.
    "fp16": Tolerances(max_rel=2e-2, min_cosine=0.999, min_top1=0.97, min_top5=0.9, max_accuracy_drop=0.01,
                       gate_random=False),
    # int8: quantisation noise with a heavy per-clip tail (clips with small, close scores), so judged by
    # agreement, accuracy and mean fidelity on real clips; the worst clip's cosine is reported, not enforced.
    "int8": Tolerances(max_rel=0.2, min_mean_cosine=0.98, min_top1=0.85, min_top5=0.7, max_accuracy_drop=0.02,
                       gate_random=False),
}


def default_tolerances(precision: str) -> Tolerances:
    if precision not in DEFAULT_TOLERANCES:
        raise ConfigError(f"no default tolerances for precision {precision!r}; "
                          f"choose one of {', '.join(DEFAULT_TOLERANCES)}")
    return DEFAULT_TOLERANCES[precision]


def score_metrics(scores: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Error metrics of `scores` (N, C) against `reference` (N, C)."""
    a = np.asarray(scores, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ArtifactError(f"scores of shape {a.shape} cannot be compared with reference scores {b.shape}")
    diff = np.abs(a - b)
    scale = float(np.abs(b).max()) or 1.0
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cosine = np.where(norms > 0, (a * b).sum(axis=1) / np.where(norms > 0, norms, 1.0), 1.0)
    k = min(5, a.shape[1])
    top_a = np.argsort(-a, axis=1, kind="stable")[:, :k]
    top_b = np.argsort(-b, axis=1, kind="stable")[:, :k]
    top5 = np.mean([set(x) == set(y) for x, y in zip(top_a, top_b, strict=True)])
    return {
        "samples": int(a.shape[0]),
        "max_abs": float(diff.max()),
        "mean_abs": float(diff.mean()),
        "max_rel": float(diff.max() / scale),
        "min_cosine": float(cosine.min()),
        "mean_cosine": float(cosine.mean()),
        "top1": float(np.mean(top_a[:, 0] == top_b[:, 0])),
        "top5": float(top5),
    }


def check_tolerances(metrics: Mapping[str, float], tol: Tolerances) -> list[str]:
    """Every violated limit, as 'name value > limit' strings."""
    checks = [
        ("max_abs", tol.max_abs, "max"), ("max_rel", tol.max_rel, "max"), ("min_cosine", tol.min_cosine, "min"),
        ("mean_cosine", tol.min_mean_cosine, "min"),
        ("top1", tol.min_top1, "min"), ("top5", tol.min_top5, "min"),
        ("accuracy_drop", tol.max_accuracy_drop, "max"),
    ]
    failures = []
    for key, limit, kind in checks:
        value = metrics.get(key)
        if limit is None or value is None:
            continue
        if (kind == "max" and value > limit) or (kind == "min" and value < limit):
            failures.append(f"{key} {value:.6g} {'>' if kind == 'max' else '<'} {limit:.6g}")
    return failures


@dataclass
class ParityResult:
    """Metrics per input set ("random", "data"), the tolerances applied and the violated ones."""

    artifact: dict[str, Any]
    reference: dict[str, Any]
    tolerances: Tolerances
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "parity",
            "version": PARITY_VERSION,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "artifact": self.artifact,
            "reference": self.reference,
            "precision": self.artifact.get("precision"),
            "tolerances": asdict(self.tolerances),
            "metrics": self.metrics,
            "failures": self.failures,
            "passed": self.passed,
        }


def _scores(runner: Runner, feed: dict[str, np.ndarray]) -> np.ndarray:
    out = runner.infer(feed)
    return out["scores"] if "scores" in out else out[runner.output_names[0]]


def _reference_feed(reference: Runner, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The artifact's feed renamed/cast to the reference's inputs (same order)."""
    return {spec.name: arr.astype(spec.dtype, copy=False)
            for spec, arr in zip(reference.input_specs, feed.values(), strict=True)}


def check_compatible(artifact: Runner, reference: Runner) -> None:
    """Refuse to compare runners of different models (config, classes or number of inputs)."""
    if len(artifact.input_specs) != len(reference.input_specs):
        raise ArtifactError(f"{artifact.name} takes {len(artifact.input_specs)} input(s), "
                            f"reference {reference.name} takes {len(reference.input_specs)}")
    if artifact.classes and reference.classes and artifact.classes != reference.classes:
        raise ArtifactError(f"{artifact.name} and reference {reference.name} have different class lists")
    a_cfg = artifact.sidecar.model if artifact.sidecar is not None else getattr(artifact, "config", None)
    r_cfg = reference.sidecar.model if reference.sidecar is not None else getattr(reference, "config", None)
    if a_cfg is not None and r_cfg is not None and json.loads(json.dumps(a_cfg)) != json.loads(json.dumps(r_cfg)):
        raise ArtifactError(f"{artifact.name} was exported from another model than reference {reference.name} "
                            f"({a_cfg.get('name')}/{a_cfg.get('attention')} vs "
                            f"{r_cfg.get('name')}/{r_cfg.get('attention')})")


def compare(
    artifact: Runner,
    reference: Runner,
    *,
    samples: int = 32,
    batch: int = 8,
    seed: int = 0,
    data: Iterable[tuple[dict[str, np.ndarray], np.ndarray]] | None = None,
    tolerances: Tolerances | None = None,
    progress: Callable[[int], None] | None = None,
) -> ParityResult:
    """Compare an artifact's scores with a reference runner's.

    samples: random standard-normal clips (batches of `batch`), the shape of the artifact's inputs.
    data: optional labelled batches (feed keyed by the artifact's input names, labels (N,)) for the
    "data" metrics, which add the accuracy of both and the artifact's drop; with data, tolerances whose
    `gate_random` is False (INT8's and FP16's) enforce the data metrics alone. tolerances: default by the
    artifact's precision. progress: called with the number of clips done after each batch.
    """
    check_compatible(artifact, reference)
    tol = tolerances or default_tolerances(artifact.precision)
    rng = np.random.default_rng(seed)
    result = ParityResult(artifact=artifact.describe(), reference=reference.describe(), tolerances=tol)
    with artifact, reference:
        if samples > 0:
            got, want = [], []
            done = 0
            while done < samples:
                n = min(batch, samples - done)
                feed = artifact.example_feed(n, rng=rng)
                got.append(_scores(artifact, feed))
                want.append(_scores(reference, _reference_feed(reference, feed)))
                done += n
                if progress is not None:
                    progress(n)
            result.metrics["random"] = score_metrics(np.concatenate(got), np.concatenate(want))
        if data is not None:
            got, want, labels = [], [], []
            for feed, y in data:
                got.append(_scores(artifact, feed))
                want.append(_scores(reference, _reference_feed(reference, feed)))
                labels.append(np.asarray(y))
                if progress is not None:
                    progress(len(y))
            if not got:
                raise ConfigError("the labelled data gave no clips to compare")
            a, b, y = np.concatenate(got), np.concatenate(want), np.concatenate(labels)
            m = score_metrics(a, b)
            m["accuracy"] = float(np.mean(a.argmax(1) == y))
            m["reference_accuracy"] = float(np.mean(b.argmax(1) == y))
            m["accuracy_drop"] = m["reference_accuracy"] - m["accuracy"]
            result.metrics["data"] = m
    result.failures = parity_failures(result.metrics, tol)
    return result


def parity_failures(metrics: Mapping[str, Mapping[str, float]], tol: Tolerances) -> list[str]:
    """Violated limits of every input set's metrics, as 'set: name value > limit'. Random-input metrics
    are skipped when labelled data was compared and `tol.gate_random` is False."""
    failures = []
    for name, values in metrics.items():
        if name == "random" and "data" in metrics and not tol.gate_random:
            continue
        failures += [f"{name}: {f}" for f in check_tolerances(values, tol)]
    return failures


def labelled_batches(
    root: str, preprocessing: Any, input_names: list[str], *, classes: list[str] | None = None, split: int = 1,
    samples: int = 32, batch: int = 8, seed: int = 0, fmt: str = "auto",
) -> Iterable[tuple[dict[str, np.ndarray], np.ndarray]]:
    """Labelled test clips of a dataset as (feed, labels) batches for `compare(data=...)`.

    Reads the split with aarm.data.annotations.load_split and decodes with aarm.data.datasets.VideoDataset
    (one centre clip per video, evaluation transforms); `samples` videos picked at random (seeded) so every
    class can appear; 0 takes all of them. classes: the model's class names, which must be the dataset's
    (label i means the same class to both). Single-input models only.
    """
    from aarm.data.annotations import load_split
    from aarm.data.datasets import VideoDataset

    if len(input_names) != 1:
        raise ConfigError("labelled parity reads one video stream; two-stream artifacts take random inputs only")
    data = load_split(root, format=fmt, split=split, subset="test")
    if classes and data.classes and list(data.classes) != list(classes):
        raise DataError(f"{root}: its {len(data.classes)} classes are not the model's {len(classes)} "
                        f"(first differing: {_first_difference(data.classes, classes)}); labels would not match")
    records = list(data.records)
    if not records:
        raise ConfigError(f"{root}: split {split} has no test videos")
    if samples and samples < len(records):
        pick = np.random.default_rng(seed).choice(len(records), size=samples, replace=False)
        records = [records[i] for i in sorted(pick)]
    dataset = VideoDataset(records, preprocessing, train=False, num_clips=1)
    xs, ys = [], []
    for i in range(len(dataset)):
        x, y = dataset[i]
        xs.append(np.asarray(x[0], dtype=np.float32))
        ys.append(int(y))
        if len(xs) == batch or i == len(dataset) - 1:
            yield {input_names[0]: np.stack(xs)}, np.asarray(ys)
            xs, ys = [], []


def _first_difference(a: list[str], b: list[str]) -> str:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"label {i}: {x!r} vs {y!r}"
    return f"{len(a)} vs {len(b)} labels"
