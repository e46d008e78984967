"""Parity of attention outputs: an artifact exported with `--attention-outputs` returns each stage's STAM maps
(N, V, T', h, w) and CAM weights (N, V, C) beside its scores; `runtime.parity.compare` measures each against the
reference's (a PyTorch runner's forward hooks, `TorchRunner.enable_attention_outputs`) on the same clips.

Each output is flattened to (N, V*T'*h*w) or (N, V*C) and measured with `runtime.compare.score_metrics`
(top-1 / top-5 left out: ranks of map positions mean nothing), one row per input set and output
("random stam.layer4.1"). They are judged by the artifact's error and cosine limits (max_abs, max_rel,
max_rel_rms, min_cosine, min_mean_cosine), gated like the scores of the same input set.
"""

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from aarm.attention_picture import CAM_LAYOUT, STAM_LAYOUT
from runtime.compare import Failure, Tolerances, gated, judge, score_metrics

if TYPE_CHECKING:
    from runtime.runner import Runner


def attention_names(runner: "Runner") -> list[str]:
    """The attention outputs (layouts NVTHW / NVC) its sidecar declares, in output order."""
    if runner.sidecar is None:
        return []
    return [t.name for t in runner.sidecar.outputs if t.layout in (STAM_LAYOUT, CAM_LAYOUT)]


class AttentionPairs:
    """Runs artifact and reference on each feed and keeps both sides' attention outputs per input set.

    Without attention outputs in the artifact it only passes the scores through. A reference that can add them
    (`enable_attention_outputs`) is asked to before it is activated; outputs the reference does not give are
    listed in `missing` and not compared."""

    def __init__(self, artifact: "Runner", reference: "Runner") -> None:
        self.artifact, self.reference = artifact, reference
        names = attention_names(artifact)
        if names and len(reference.output_names) == 1 and hasattr(reference, "enable_attention_outputs"):
            reference.enable_attention_outputs()
        self.names = [n for n in names if n in reference.output_names]
        self.missing = [n for n in names if n not in self.names]
        self.got: dict[str, dict[str, list[np.ndarray]]] = {}
        self.want: dict[str, dict[str, list[np.ndarray]]] = {}

    def run(self, input_set: str, feed: dict[str, np.ndarray], reference_feed: dict[str, np.ndarray],
            ) -> tuple[np.ndarray, np.ndarray]:
        """(artifact scores, reference scores) of one feed, keeping the attention outputs of both."""
        a, b = self.artifact.infer(feed), self.reference.infer(reference_feed)
        for n in self.names:
            self.got.setdefault(input_set, {}).setdefault(n, []).append(np.asarray(a[n]).reshape(len(a[n]), -1))
            self.want.setdefault(input_set, {}).setdefault(n, []).append(np.asarray(b[n]).reshape(len(b[n]), -1))
        return _scores(self.artifact, a), _scores(self.reference, b)

    def metrics(self) -> dict[str, dict[str, Any]]:
        """{"<input set> <output>": score metrics without rankings} for every compared output."""
        rows = {}
        for input_set, outputs in self.got.items():
            for n, parts in outputs.items():
                m = score_metrics(np.concatenate(parts), np.concatenate(self.want[input_set][n]))
                rows[f"{input_set} {n}"] = {**m, "top1": None, "top5": None}
        return rows

    def judge(self, metrics: dict[str, dict[str, Any]], input_sets: list[str], tol: Tolerances) -> list[Failure]:
        """Violated error/cosine limits of `metrics` (from `metrics()`), each gated like its input set's scores."""
        maps_tol = replace(tol, min_top1=None, min_top5=None, max_accuracy_drop=None)
        failures: list[Failure] = []
        for key, values in metrics.items():
            input_set = key.split(" ", 1)[0]
            failures += judge(values, maps_tol, key, limits=gated(input_set, input_sets, tol))
        return failures


def _scores(runner: "Runner", out: dict[str, np.ndarray]) -> np.ndarray:
    return out["scores"] if "scores" in out else out[runner.output_names[0]]


def attention_rows(metrics: dict[str, dict[str, Any]], violations: list[Failure]) -> list[tuple[str, ...]]:
    """One table row per compared attention output: name, max abs / max relative error, min cosine, verdict."""
    bad: dict[str, list[str]] = {}
    for f in violations:
        if f.input_set in metrics:
            bad.setdefault(f.input_set, []).append(f.metric)

    def fmt(v: Any, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    return [(key, fmt(m["max_abs"], ".3g"), fmt(m["max_rel"], ".3g"), fmt(m["min_cosine"], ".6f"),
             "FAIL: " + ", ".join(bad[key]) if key in bad else "pass") for key, m in metrics.items()]
