"""The one comparator: score metrics, limits and typed failures, shared by parity (`runtime.parity`), the
post-export check (`export.verify`) and calibration's sensitivity search (`calibration.sensitivity`).

    m = score_metrics(scores, reference)               # scores, reference: (N, num_classes)
    failures = judge(m, Tolerances(max_rel=1e-5), "random")
    print("\\n".join(map(str, failures)))               # "random: max_rel 0.0481 > 1e-05"

Vocabulary (every metric a fraction, never a percent):
  samples              clips compared (rows where both sides are finite)
  artifact_nonfinite   NaN/Inf values in the artifact's scores (over all N rows)
  reference_nonfinite  NaN/Inf values in the reference's scores
  max_abs, mean_abs    largest / mean |scores - reference|
  max_rel              max_abs over the reference's largest |score| (defined where scores cross zero)
  rel_rms              RMS of (scores - reference) over the RMS of the reference
  rel_mse              rel_rms squared (calibration's per-layer "score error")
  min_cosine, mean_cosine   per-clip cosine similarity of the two score vectors
  top1, top5           share of clips whose top-1 class / top-5 set is a top-1 / top-5 of the reference
                       (where reference scores tie, to TIE_REL of the clip's largest |score|, any of the
                       tied classes is; top5: None for 5 classes or fewer, where the set is every class)
and with labels (N,): accuracy, reference_accuracy, accuracy_drop (reference minus artifact) and lost
(share of clips the reference gets right and the artifact wrong; flips the other way do not offset it).

Rows where either side holds a NaN or Inf are left out of the error metrics and counted instead; any such
value is a failure whatever the limits. An error metric that could not be measured (no finite rows) is None.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np

from aarm.errors import ConfigError
from runtime.errors import ArtifactError

NONFINITE = ("artifact_nonfinite", "reference_nonfinite")


@dataclass(frozen=True)
class Limit:
    """A tolerance field: the metric it bounds and from which side."""

    field: str
    metric: str
    kind: Literal["max", "min"]
    low: float  # smallest allowed value of the limit itself
    high: float  # largest allowed value
    low_open: bool = False  # the limit must be > low rather than >= low


LIMITS: tuple[Limit, ...] = (
    Limit("max_abs", "max_abs", "max", 0.0, math.inf, low_open=True),
    Limit("max_rel", "max_rel", "max", 0.0, math.inf, low_open=True),
    Limit("max_rel_rms", "rel_rms", "max", 0.0, math.inf, low_open=True),
    Limit("min_cosine", "min_cosine", "min", -1.0, 1.0),
    Limit("min_mean_cosine", "mean_cosine", "min", -1.0, 1.0),
    Limit("min_top1", "top1", "min", 0.0, 1.0),
    Limit("min_top5", "top5", "min", 0.0, 1.0),
    Limit("max_accuracy_drop", "accuracy_drop", "max", 0.0, 1.0),
)
LIMIT_OF_METRIC = {lim.metric: lim for lim in LIMITS}


@dataclass(frozen=True)
class Tolerances:
    """Limits a check enforces; None leaves a metric unchecked. `gate_random` False: with labelled data
    given, random-input metrics are reported but not judged (INT8: calibration fits ranges to real clips,
    and standard-normal noise falls outside them by design; FP16: noise gives near-tied scores whose top-1
    flips under rounding). Every limit must be finite and inside its metric's range; error limits (max_abs,
    max_rel, max_rel_rms) must be > 0. ConfigError otherwise, naming the limit. `sources`: where each
    limit came from, as (field, origin) pairs (`source`); not part of the limits (equality ignores it)."""

    max_abs: float | None = None
    max_rel: float | None = None
    max_rel_rms: float | None = None
    min_cosine: float | None = None
    min_mean_cosine: float | None = None
    min_top1: float | None = None
    min_top5: float | None = None
    max_accuracy_drop: float | None = None
    gate_random: bool = True
    sources: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        for lim in LIMITS:
            value = getattr(self, lim.field)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"tolerance `{lim.field}` must be a number, got {value!r}")
            low_ok = value > lim.low if lim.low_open else value >= lim.low
            if not math.isfinite(value) or not low_ok or value > lim.high:
                bound = f"> {lim.low:g}" if lim.low_open else f">= {lim.low:g}"
                if math.isfinite(lim.high):
                    bound += f" and <= {lim.high:g}"
                raise ConfigError(f"tolerance `{lim.field}` must be a finite number {bound}, got {value}")

    def override(self, origins: Mapping[str, str] | None = None, **changes: float | None) -> "Tolerances":
        """A copy with the given limits replaced (None values in `changes` are ignored); each replaced
        limit's source becomes its entry in `origins` (the CLI gives its option, "--rtol"), else "given"."""
        given = {k: v for k, v in changes.items() if v is not None}
        sources = {**dict(self.sources), **{k: (origins or {}).get(k, "given") for k in given}}
        return replace(self, **given, sources=tuple(sources.items()))

    def limits(self) -> dict[str, float]:
        """The limits set, by tolerance field."""
        return {lim.field: getattr(self, lim.field) for lim in LIMITS if getattr(self, lim.field) is not None}

    def source(self, name: str) -> str:
        """Where limit `name` came from ("fp32 default for resnet18 (measured table)", "fp16 general
        default", "--rtol"); "given" for a limit set without a recorded origin."""
        return dict(self.sources).get(name, "given")

    def limit_sources(self) -> dict[str, str]:
        """The source of every limit set, by tolerance field."""
        return {name: self.source(name) for name in self.limits()}

    def to_dict(self) -> dict[str, Any]:
        """The limits and gate_random (None for a limit not set); sources are `limit_sources`."""
        return {k: v for k, v in asdict(self).items() if k != "sources"}


@dataclass(frozen=True)
class Failure:
    """One violated limit: `metric` measured on `input_set` ("random", "data", ...) beyond `limit`.
    kind "max": the metric must not exceed the limit; "min": it must not fall below it. A metric that
    measured NaN fails either way. str() is the one-line text ("data: mean_cosine 0.97 < 0.98")."""

    metric: str
    measured: float
    limit: float
    input_set: str
    kind: Literal["max", "min"] = "max"

    def __str__(self) -> str:
        if self.metric in NONFINITE:
            side = self.metric.split("_", 1)[0]
            return (f"{self.input_set}: {self.metric} {self.measured:g} > {self.limit:g} "
                    f"(NaN/Inf values in the {side}'s scores)")
        op = ">" if self.kind == "max" else "<"
        text = f"{self.input_set}: {self.metric} {self.measured:.6g} {op} {self.limit:.6g}"
        if "cosine" in self.metric and self.limit > 0.999:  # 0.9999985 and 0.9999999 both print as 1
            text += f" (1 - cosine {1 - self.measured:.2g} > {1 - self.limit:.2g})"
        return text

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------- metrics


def _pair(scores: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(scores, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ArtifactError(f"scores of shape {a.shape} cannot be compared with reference scores {b.shape}")
    return a, b


TIE_REL = 1e-6  # reference scores closer than this times the clip's largest |score| are tied (top-1 / top-5)


def score_metrics(scores: np.ndarray, reference: np.ndarray, *, rankings: bool = True) -> dict[str, Any]:
    """Error metrics (see the module docstring) of `scores` (N, C) against `reference` (N, C). rankings
    False: top1 and top5 are None (feature maps flattened to (N, C*H*W), where ranks mean nothing)."""
    a_all, b_all = _pair(scores, reference)
    bad_a, bad_b = ~np.isfinite(a_all), ~np.isfinite(b_all)
    finite = ~(bad_a.any(axis=1) | bad_b.any(axis=1))
    a, b = a_all[finite], b_all[finite]
    m: dict[str, Any] = {"samples": int(a.shape[0]), "artifact_nonfinite": int(bad_a.sum()),
                         "reference_nonfinite": int(bad_b.sum())}
    if a.size == 0:
        return {**m, **dict.fromkeys(("max_abs", "mean_abs", "max_rel", "rel_rms", "rel_mse", "min_cosine",
                                      "mean_cosine", "top1", "top5"))}
    diff = np.abs(a - b)
    scale = float(np.abs(b).max()) or 1.0
    mean_square = float(np.mean(b**2))
    rel_mse = float(np.mean(diff**2)) / max(mean_square, 1e-24)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cosine = np.where(norms > 0, (a * b).sum(axis=1) / np.where(norms > 0, norms, 1.0), 1.0)
    errors = {
        **m,
        "max_abs": float(diff.max()),
        "mean_abs": float(diff.mean()),
        "max_rel": float(diff.max() / scale),
        "rel_rms": math.sqrt(rel_mse),
        "rel_mse": rel_mse,
        "min_cosine": float(cosine.min()),
        "mean_cosine": float(cosine.mean()),
    }
    if not rankings:
        return {**errors, "top1": None, "top5": None}
    # Agreement: the artifact's top-k is a top-k of the reference. Where reference scores tie, any of the tied
    # classes is as much in its top-k as the one its sort happened to pick, so a class counts if its reference
    # score reaches the reference's k-th largest; scores within TIE_REL of the clip's largest |score| (float32
    # rounding) are ties. AARM's VCM gates unlikely classes' scores to exactly 0 or ~1e-6 (sigmoid saturates),
    # so a trained model's top-5 often ends in such ties.
    k = min(5, a.shape[1])
    top_a = np.argsort(-a, axis=1, kind="stable")[:, :k]
    ranked = -np.sort(-b, axis=1)
    tie = TIE_REL * np.abs(b).max(axis=1, keepdims=True)
    in_b = np.take_along_axis(b, top_a, axis=1) >= ranked[:, k - 1 : k] - tie
    return {
        **errors,
        "top1": float(np.mean(np.take_along_axis(b, top_a[:, :1], axis=1) >= ranked[:, :1] - tie)),
        # with 5 classes or fewer the top-5 set is every class: agreement would be 100 % by construction
        "top5": float(np.mean(in_b.all(axis=1))) if a.shape[1] > 5 else None,
    }


def unlabelled(labels: np.ndarray) -> bool:
    """No labels, or any label < 0 (the convention for unlabelled clips)."""
    labels = np.asarray(labels)
    return labels.size == 0 or bool((labels < 0).any())


def label_metrics(scores: np.ndarray, reference: np.ndarray, labels: np.ndarray) -> dict[str, float | None]:
    """accuracy, reference_accuracy, accuracy_drop and lost of `scores` (N, C) against `reference` (N, C)
    on labels (N,); every value None when the clips are unlabelled. A row holding NaN or Inf never counts
    as right."""
    a, b = _pair(scores, reference)
    y = np.asarray(labels)
    if len(y) != len(a):
        raise ArtifactError(f"{len(y)} labels for {len(a)} clips")
    if unlabelled(y):
        return dict.fromkeys(("accuracy", "reference_accuracy", "accuracy_drop", "lost"))
    right_a = (a.argmax(1) == y) & np.isfinite(a).all(axis=1)
    right_b = (b.argmax(1) == y) & np.isfinite(b).all(axis=1)
    acc, ref_acc = float(right_a.mean()), float(right_b.mean())
    return {"accuracy": acc, "reference_accuracy": ref_acc, "accuracy_drop": ref_acc - acc,
            "lost": float(np.mean(right_b & ~right_a))}


# ---------------------------------------------------------------------------------------------- verdicts


def gated(input_set: str, input_sets: Sequence[str], tol: Tolerances) -> bool:
    """Whether `tol` judges the metrics of `input_set`, given every set measured: random-input metrics are
    reported only when labelled data was compared and `tol.gate_random` is False."""
    return not (input_set == "random" and "data" in input_sets and not tol.gate_random)


def judge(metrics: Mapping[str, Any], tol: Tolerances, input_set: str, *, limits: bool = True) -> list[Failure]:
    """Every violated limit of one input set's metrics. NaN/Inf in either side's scores always fails; a
    limit whose metric was not measured for this set (e.g. accuracy drop on random inputs) is skipped; a
    metric that measured NaN fails its limit. limits False: the NaN/Inf check alone."""
    failures = [Failure(key, float(metrics[key]), 0.0, input_set) for key in NONFINITE if metrics.get(key)]
    for lim in LIMITS if limits else ():
        limit = getattr(tol, lim.field)
        value = metrics.get(lim.metric)
        if limit is None or value is None:
            continue
        value = float(value)
        if math.isnan(value) or (lim.kind == "max" and value > limit) or (lim.kind == "min" and value < limit):
            failures.append(Failure(lim.metric, value, float(limit), input_set, lim.kind))
    return failures


def judge_sets(metrics: Mapping[str, Mapping[str, Any]], tol: Tolerances) -> list[Failure]:
    """Violated limits of every judged input set (see `gated`), and NaN/Inf in any set's scores. Refuses
    (ConfigError) a check that judges nothing: no input set, a set with no clip, or no limit at all."""
    if not metrics:
        raise ConfigError("nothing was compared: no random inputs and no labelled clips")
    if not tol.limits():
        raise ConfigError("no tolerance is set; a check without limits judges nothing")
    failures: list[Failure] = []
    for name, values in metrics.items():
        if not values.get("samples") and not any(values.get(k) for k in NONFINITE):
            raise ConfigError(f"the {name} input set compared no clips")
        failures += judge(values, tol, name, limits=gated(name, list(metrics), tol))
    return failures
