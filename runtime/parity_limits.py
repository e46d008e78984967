"""Default parity limits per (precision, backbone), from the measured error of correct artifacts.

`benchmarks/parity_limits.py` measures every model of the zoo (RGB and flow; AARM, and no attention for
ResNet-18/50; exported, optimised and FP16 graphs) against PyTorch on random inputs and on decoded clips,
into `benchmarks/results/parity_limits.json`. From those measurements, for each precision and backbone:

    max_rel limit         = min(general default, MARGIN    x worst correct max_rel)
    1 - min_cosine limit  = min(general default, MARGIN**2 x worst correct 1 - min_cosine)

the worst taken over modality, attention, BatchNorm state, input set and (FP32) exported and optimised
graph, rounded up to two significant digits. MARGIN is 10 in units of score error; 1 - cosine grows as the
square of the error (1 - cos ~ rel_rms**2 / 2 for small errors, as the measurements show), so the same
margin is MARGIN**2 on it. A limit is never looser than the general default (`runtime.parity.
DEFAULT_TOLERANCES`); where MARGIN x the worst correct value is not tighter, the backbone keeps the general
default, and `EXCEEDED` records where the correct random-initialised artifact measured beyond a general
limit itself (a finding: the limit is kept, not loosened).

Set per backbone: max_rel and min_cosine, the scale-free metrics. Kept at the general default: max_abs (it
is in units of the scores, whose scale the random weights set: 0.01 for C3D to 2 for ResNet-50 here,
logits near 10 for a trained model, so an absolute limit measured on random weights says nothing about a
trained model's), top-1/top-5 agreement (8 clips per set cannot resolve a rate below 1/8) and the accuracy
drop (not measured: random weights have no accuracy).

    tol = backbone_tolerances(DEFAULT_TOLERANCES["fp32"], "fp32", "resnet18")
    tol.max_rel, tol.source("max_rel")     # 2.8e-05, "fp32 default for resnet18 (measured table)"
"""

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from runtime.compare import LIMIT_OF_METRIC, Tolerances, judge

MARGIN = 10.0
TUNED = ("max_rel", "min_cosine")  # the tolerance fields the table sets per backbone
INPUT_SETS = ("random", "clips")

# Derived from benchmarks/results/parity_limits.json by `derive` (tests/runtime/test_parity_limits.py
# checks that the two agree): the limits tighter than the general default, by precision and backbone.
TABLE: dict[str, dict[str, dict[str, float]]] = {
    "fp32": {
        "resnet18": {"max_rel": 2.8e-5, "min_cosine": 1 - 3.6e-10},
        "resnet34": {"max_rel": 4.2e-5, "min_cosine": 1 - 1.3e-9},
        "resnet50": {"min_cosine": 1 - 1.9e-7},
        "vgg16": {"max_rel": 8.7e-6, "min_cosine": 1 - 2.9e-11},
        "c3d": {"max_rel": 3.5e-6, "min_cosine": 1 - 2.0e-12},
        "resnet3d18": {"max_rel": 4.2e-5, "min_cosine": 1 - 1.5e-9},
    },
    "fp16": {
        "resnet18": {"min_cosine": 1 - 1.8e-4},
        "resnet34": {"min_cosine": 1 - 6.1e-4},
        "vgg16": {"max_rel": 9.2e-3, "min_cosine": 1 - 2.9e-5},
        "c3d": {"max_rel": 2.8e-3, "min_cosine": 1 - 2.0e-6},
        "resnet3d18": {"min_cosine": 1 - 3.6e-4},
    },
}

# The general limits the worst correct (random-initialised) artifact of a backbone measured beyond, by tolerance
# field: kept, not loosened (docs/runtime.md, "Parity limits").
EXCEEDED: dict[str, dict[str, tuple[str, ...]]] = {
    "fp32": {
        "resnet50": ("max_abs",),
        "resnet101": ("max_abs", "max_rel"),
        "resnet152": ("max_abs", "max_rel"),
    },
    "fp16": {
        "resnet50": ("max_rel", "min_top1", "min_top5"),
        "resnet101": ("max_rel", "min_cosine", "min_top1", "min_top5"),
        "resnet152": ("max_rel", "min_cosine", "min_top1", "min_top5"),
        "resnet3d18": ("min_top5",),
    },
}


def ceil2(x: float) -> float:
    """`x` > 0 rounded up to two significant digits (2.705e-05 -> 2.8e-05)."""
    exp = math.floor(math.log10(x)) - 1
    mantissa = math.ceil(round(x / 10.0**exp, 9))
    return float(f"{mantissa}e{exp}")


def _rows(measurements: Mapping[str, Any], precision: str, backbone: str, *, tampered: bool = False):
    """(input set, metrics) of every correct (or tampered) artifact of `precision` measured for `backbone`."""
    for result in measurements["results"]:
        if result["model"] != backbone:
            continue
        for artifact in result["artifacts"].values():
            if artifact["precision"] != precision:
                continue
            for name in INPUT_SETS:
                key = f"{name}_tampered" if tampered else name
                if key in artifact:
                    yield name, artifact[key]


def worst_correct(measurements: Mapping[str, Any], precision: str, backbone: str) -> dict[str, float]:
    """Worst correct value per metric for one backbone: largest max_rel, smallest min_cosine."""
    rows = [m for _, m in _rows(measurements, precision, backbone)]
    return {"max_rel": max(m["max_rel"] for m in rows), "min_cosine": min(m["min_cosine"] for m in rows)}


def derive(measurements: Mapping[str, Any], general: Mapping[str, Tolerances]
           ) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, dict[str, tuple[str, ...]]]]:
    """The rule of the module docstring applied to `measurements` (the JSON of benchmarks/parity_limits.py)
    and the general defaults by precision: (TABLE, EXCEEDED)."""
    backbones = list(dict.fromkeys(r["model"] for r in measurements["results"]))
    table: dict[str, dict[str, dict[str, float]]] = {}
    exceeded: dict[str, dict[str, tuple[str, ...]]] = {}
    for precision in ("fp32", "fp16"):
        tol = general[precision]
        for backbone in backbones:
            if not any(True for _ in _rows(measurements, precision, backbone)):
                continue
            worst = worst_correct(measurements, precision, backbone)
            limits: dict[str, float] = {}
            rel = ceil2(MARGIN * worst["max_rel"])
            if tol.max_rel is None or rel < tol.max_rel:
                limits["max_rel"] = rel
            one_minus = ceil2(MARGIN**2 * max(1.0 - worst["min_cosine"], 1e-300))
            if tol.min_cosine is None or 1.0 - one_minus > tol.min_cosine:
                limits["min_cosine"] = 1.0 - one_minus
            if limits:
                table.setdefault(precision, {})[backbone] = limits
            beyond = {LIMIT_OF_METRIC[f.metric].field if f.metric in LIMIT_OF_METRIC else f.metric
                      for name, m in _rows(measurements, precision, backbone) for f in judge(m, tol, name)}
            if beyond:
                exceeded.setdefault(precision, {})[backbone] = tuple(sorted(beyond))
    return table, exceeded


def backbone_tolerances(general: Tolerances, precision: str, backbone: str | None, device: str = "cpu"
                        ) -> Tolerances:
    """`general` (the precision's general default) with the backbone's measured limits from TABLE, each
    limit's origin recorded (`Tolerances.source`). A backbone not in the table keeps the general default,
    and so does a comparison that runs on another device than the CPU (`device`, e.g. "cuda:0"): the table
    was measured with onnxruntime's CPU kernels against PyTorch on the CPU."""
    table = TABLE.get(precision, {}).get(backbone or "", {})
    measured = table if device == "cpu" else {}
    beyond = EXCEEDED.get(precision, {}).get(backbone or "", ())
    known = bool(table or beyond)
    sources = {}
    for name in general.limits():
        if name in measured:
            sources[name] = f"{precision} default for {backbone} (measured table)"
        elif name in table:
            sources[name] = f"{precision} general default (the {backbone} table was measured on CPU, not {device})"
        elif name in beyond:
            sources[name] = f"{precision} general default (a correct random-init {backbone} measured beyond it)"
        elif name in TUNED and known:
            sources[name] = f"{precision} general default ({MARGIN:g}x the worst correct {backbone} is not tighter)"
        else:
            sources[name] = f"{precision} general default"
    return replace(general, **measured, sources=tuple(sources.items()))
