"""Numerical parity of an artifact with its PyTorch reference, on random inputs and on labelled clips.

    result = compare(open_runner("model.int8.onnx"), open_runner("model.pt"), samples=32)
    if not result: print(result.failures)            # truthy when every tolerance holds (Polygraphy style)

Metrics on the "scores" output (N, num_classes), limits and typed failures come from `runtime.compare`
(max absolute and relative error, RMS relative error, per-clip cosine, top-1/top-5 agreement, NaN/Inf
counts and, on labelled clips, accuracy of each, the drop and lost clips). Default tolerances follow the
artifact's precision and backbone and come from measured errors of correct artifacts (`runtime.
parity_limits`, docs/runtime.md "Parity limits"); every one can be overridden, and each records its source.
An artifact with attention outputs (export --attention-outputs) also has each of them compared with the
reference's PyTorch hooks, as `result.attention` rows (`runtime.attention_parity`).
"""

import json
from collections.abc import Iterable, Iterator, Sized
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from aarm.errors import AarmError, ConfigError, DataError
from aarm.progress import Progress
from runtime.attention_parity import AttentionPairs
from runtime.compare import Failure, Tolerances, gated, judge_sets, label_metrics, score_metrics
from runtime.errors import ArtifactError
from runtime.parity_limits import backbone_tolerances
from runtime.runner import Runner

PARITY_VERSION = 2

__all__ = ["DEFAULT_TOLERANCES", "ParityFailure", "ParityResult", "Tolerances", "backbone_of", "compare",
           "default_tolerances", "labelled_batches", "runner_tolerances"]


class ParityFailure(AarmError):
    """An artifact whose outputs differ from its reference beyond the tolerances."""


DEFAULT_TOLERANCES: dict[str, Tolerances] = {
    # General defaults: what a backbone outside the measured table (runtime.parity_limits) gets, and any
    # backbone on a GPU. fp32: the same maths in another order; anything beyond rounding is a bug. min_cosine:
    # 10x the worst correct 1 - cosine of the zoo (1.4e-7, benchmarks/results/parity_limits.json; docs/runtime.md,
    # "Parity limits"). No max_abs: it is in units of the scores, whose scale varies 1000x across models and inputs;
    # max_rel is the same error over the score scale.
    "fp32": Tolerances(max_rel=1e-4, min_cosine=1 - 1.5e-6, min_top1=1.0, min_top5=1.0, max_accuracy_drop=0.0),
    # fp16: ~3 significant digits per op; near-ties may flip, and noise inputs give near-ties, so with real
    # clips to judge by, noise metrics are reported only.
    "fp16": Tolerances(max_rel=2e-2, min_cosine=0.999, min_top1=0.97, min_top5=0.9, max_accuracy_drop=0.01,
                       gate_random=False),
    # int8: quantisation noise with a heavy per-clip tail (clips with small, close scores), so judged by
    # agreement, accuracy and mean fidelity on real clips; the worst clip's cosine is reported, not enforced.
    "int8": Tolerances(max_rel=0.2, min_mean_cosine=0.98, min_top1=0.85, min_top5=0.7, max_accuracy_drop=0.02,
                       gate_random=False),
}


def default_tolerances(precision: str, backbone: str | None = None, device: str = "cpu") -> Tolerances:
    """The default limits of `precision` for `backbone` (a model name of the zoo, as the sidecar's model
    config gives it): the measured per-backbone table (`runtime.parity_limits`) where it is tighter, else
    the general default (`DEFAULT_TOLERANCES`); the table applies to comparisons on the CPU (`device`),
    where it was measured. `Tolerances.source` says which, per limit."""
    if precision not in DEFAULT_TOLERANCES:
        raise ConfigError(f"no default tolerances for precision {precision!r}; "
                          f"choose one of {', '.join(DEFAULT_TOLERANCES)}")
    return backbone_tolerances(DEFAULT_TOLERANCES[precision], precision, backbone, device)


def backbone_of(runner: Runner) -> str | None:
    """The backbone (model name) of a runner's model: its sidecar's model config (validated on read), or a
    PyTorch runner's aarm_config; None when neither names one."""
    config = runner.config
    name = config.get("name") if isinstance(config, dict) else None
    return name if isinstance(name, str) else None


def runner_tolerances(artifact: Runner, reference: Runner | None = None) -> Tolerances:
    """`default_tolerances` for comparing `artifact` with `reference`: the artifact's precision and
    backbone, on the device that is not the CPU if either runs elsewhere."""
    devices = [artifact.device] + ([reference.device] if reference is not None else [])
    device = next((d for d in devices if d != "cpu"), "cpu")
    return default_tolerances(artifact.precision, backbone_of(artifact), device)


@dataclass
class ParityResult:
    """Metrics per input set ("random", "data"), the tolerances applied and the violated limits."""

    artifact: dict[str, Any]
    reference: dict[str, Any]
    tolerances: Tolerances
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    violations: list[Failure] = field(default_factory=list)
    rebuild: dict[str, Any] | None = None  # an FP16 graph against its parent converted again (export.verify)
    backbone: str | None = None  # the artifact's model name, which picks its default limits
    parent: dict[str, Any] | None = None  # the rebuild's parent graph against the same reference (check_parent)
    attention: dict[str, dict[str, Any]] = field(default_factory=dict)  # "<set> <output>": attention output metrics

    def add_rebuild(self, rebuild: dict[str, Any]) -> None:
        """Record `export.verify.compare_with_rebuild`'s result; its metrics are judged by the backbone's
        FP32 limits (the same step run again computes the same thing), as input set "rebuild"."""
        self.rebuild = rebuild
        if "metrics" in rebuild:
            tol = default_tolerances("fp32", self.backbone)
            self.rebuild = {**rebuild, "limit_sources": tol.limit_sources()}
            self.violations += judge_sets({"rebuild": rebuild["metrics"]}, tol)

    def add_parent(self, path: str, parent: "ParityResult") -> None:
        """Record the parity of the graph the rebuild check converted again (at `path`) with the same
        reference, under that graph's own default limits (FP32, its backbone's); its failures join this
        result's as input set "parent". The rebuild check proves the artifact is its parent converted, so
        this is what ties the artifact to PyTorch at FP32 tightness."""
        self.parent = {"path": path, "precision": parent.artifact.get("precision"), "metrics": parent.metrics,
                       "tolerances": parent.tolerances.to_dict(), "limit_sources": parent.tolerances.limit_sources()}
        self.violations += [replace(f, input_set="parent") for f in parent.violations]

    @property
    def failures(self) -> list[str]:
        """The violated limits as one-line texts ("random: max_rel 0.0481 > 1e-05")."""
        return [str(f) for f in self.violations]

    @property
    def judged(self) -> dict[str, bool]:
        """Per input set, whether its metrics were judged against the limits (else shown only)."""
        return {name: gated(name, list(self.metrics), self.tolerances) for name in self.metrics}

    @property
    def passed(self) -> bool:
        return not self.violations

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
            "backbone": self.backbone,
            "tolerances": self.tolerances.to_dict(),
            "limit_sources": self.tolerances.limit_sources(),
            "metrics": self.metrics,
            "attention": self.attention,
            "judged": self.judged,
            "failures": self.failures,
            "violations": [f.to_dict() for f in self.violations],
            "rebuild": self.rebuild,
            "parent": self.parent,
            "passed": self.passed,
        }


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
    a_cfg, r_cfg = artifact.config, reference.config
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
    progress: Progress | None = None,
) -> ParityResult:
    """Compare an artifact's scores with a reference runner's (metrics and verdicts: `runtime.compare`).

    samples: random standard-normal clips (batches of `batch`), the shape of the artifact's inputs; 0 takes
    none, which needs `data`. data: optional labelled batches (feed keyed by the artifact's input names,
    labels (N,)) for the "data" metrics, which add the accuracy of both, the artifact's drop and its lost
    clips; with data, tolerances whose `gate_random` is False (INT8's and FP16's) judge the data metrics
    alone (NaN or Inf in any set's scores fails whatever the set). tolerances: default by the artifact's
    precision and backbone (`default_tolerances`). progress: hears ("comparing", clips done, clips in all)
    after each batch (data of unknown length counts as it goes). ConfigError for a check that would compare
    nothing (no samples and no data, an empty data set, no limit set).
    """
    if samples < 0:
        raise ConfigError(f"samples must be >= 0, got {samples}")
    if batch < 1:
        raise ConfigError(f"batch must be >= 1, got {batch}")
    if samples == 0 and data is None:
        raise ConfigError("samples 0 and no labelled data: the check would compare nothing")
    check_compatible(artifact, reference)
    backbone = backbone_of(artifact)
    tol = tolerances or runner_tolerances(artifact, reference)
    if not tol.limits():
        raise ConfigError("no tolerance is set; a check without limits judges nothing")
    rng = np.random.default_rng(seed)
    pairs = AttentionPairs(artifact, reference)  # attention outputs, where the artifact has them
    result = ParityResult(artifact=artifact.describe(), reference=reference.describe(), tolerances=tol,
                          backbone=backbone)
    total = samples + (len(data) if isinstance(data, Sized) else 0)
    compared = 0

    def tick(n: int) -> None:
        nonlocal compared
        compared += n
        if progress is not None:
            progress("comparing", compared, max(total, compared))

    with artifact, reference:
        if samples > 0:
            got, want = [], []
            done = 0
            while done < samples:
                n = min(batch, samples - done)
                feed = artifact.example_feed(n, rng=rng)
                a, b = pairs.run("random", feed, _reference_feed(reference, feed))
                got.append(a)
                want.append(b)
                done += n
                tick(n)
            result.metrics["random"] = score_metrics(np.concatenate(got), np.concatenate(want))
        if data is not None:
            got, want, labels = [], [], []
            for feed, y in data:
                a, b = pairs.run("data", feed, _reference_feed(reference, feed))
                got.append(a)
                want.append(b)
                labels.append(np.asarray(y))
                tick(len(y))
            if not got:
                raise ConfigError("the labelled data gave no clips to compare")
            a, b, y = np.concatenate(got), np.concatenate(want), np.concatenate(labels)
            result.metrics["data"] = {**score_metrics(a, b), **label_metrics(a, b, y)}
    result.violations = judge_sets(result.metrics, tol)
    result.attention = pairs.metrics()
    result.violations += pairs.judge(result.attention, list(result.metrics), tol)
    return result


def check_parent(result: ParityResult, reference: Runner, *, samples: int = 8, batch: int = 8, seed: int = 0,
                 threads: int | None = None) -> None:
    """After the rebuild check (`ParityResult.add_rebuild`) found an FP16 graph's parent present with its
    recorded sha256: compare that parent with `reference` on `samples` random clips under its own default
    limits and record it (`ParityResult.add_parent`). The rebuild check trusts the parent; without this, a
    parent changed and re-signed, with the FP16 graph converted from it, would pass at FP16 limits.
    Nothing to do when there was no rebuild."""
    from runtime.backends import open_runner

    if not result.rebuild or "parent" not in result.rebuild:
        return
    path = result.rebuild["parent"]
    result.add_parent(path, compare(open_runner(path, threads=threads), reference, samples=samples, batch=batch,
                                    seed=seed))


class LabelledClips:
    """Labelled test clips of a dataset (see `labelled_batches`): iterates as (feed, labels) batches, feed
    {input name: (B, ...)} and labels (B,); len() is the number of clips."""

    def __init__(self, dataset: Any, input_name: str, batch: int) -> None:
        self.dataset, self.input_name, self.batch = dataset, input_name, batch

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
        xs, ys = [], []
        for i in range(len(self.dataset)):
            x, y = self.dataset[i]
            xs.append(np.asarray(x[0], dtype=np.float32))
            ys.append(int(y))
            if len(xs) == self.batch or i == len(self.dataset) - 1:
                yield {self.input_name: np.stack(xs)}, np.asarray(ys)
                xs, ys = [], []


def labelled_batches(
    root: str, preprocessing: Any, input_names: list[str], *, classes: list[str] | None = None, split: int = 1,
    samples: int = 32, batch: int = 8, seed: int = 0, fmt: str = "auto", videos: str | None = None,
    annotations: str | None = None,
) -> LabelledClips:
    """Labelled test clips of a dataset as (feed, labels) batches for `compare(data=...)`.

    Reads the split with aarm.data.annotations.load_split (here, so a bad dataset is refused before anything
    runs) and decodes with aarm.data.datasets.VideoDataset as it is iterated (one centre clip per video,
    evaluation transforms); `samples` videos picked at random (seeded) so every class can appear; 0 takes
    all of them. classes: the model's class names, which must be the dataset's (label i means the same class
    to both). videos / annotations: where the videos and split files are when `root` does not hold them (as
    for `train`). Single-input models only.
    """
    from aarm.data.annotations import load_split
    from aarm.data.datasets import VideoDataset

    if len(input_names) != 1:
        raise ConfigError("labelled parity reads one video stream; two-stream artifacts take random inputs only")
    data = load_split(root, format=fmt, split=split, subset="test", videos=videos and Path(videos),
                      annotations=annotations and Path(annotations))
    if classes and data.classes and list(data.classes) != list(classes):
        raise DataError(f"{root}: its {len(data.classes)} classes are not the model's {len(classes)} "
                        f"(first differing: {_first_difference(data.classes, classes)}); labels would not match")
    records = list(data.records)
    if not records:
        raise ConfigError(f"{root}: split {split} has no test videos")
    if samples and samples < len(records):
        pick = np.random.default_rng(seed).choice(len(records), size=samples, replace=False)
        records = [records[i] for i in sorted(pick)]
    return LabelledClips(VideoDataset(records, preprocessing, train=False, num_clips=1), input_names[0], batch)


def _first_difference(a: list[str], b: list[str]) -> str:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"label {i}: {x!r} vs {y!r}"
    return f"{len(a)} vs {len(b)} labels"
