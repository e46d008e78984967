"""Default parity limits per (precision, backbone), from the measured error of correct artifacts.

`benchmarks/parity_limits.py` measures every model of the zoo (RGB and flow; AARM, and no attention for
ResNet-18/50; exported, optimised and FP16 graphs) against PyTorch on random inputs and on decoded clips,
into `benchmarks/results/parity_limits.json`. From those measurements, for each precision and backbone:

    max_rel limit         = MARGIN    x worst correct max_rel
    1 - min_cosine limit  = MARGIN**2 x worst correct 1 - min_cosine
    min_top1 / min_top5   = general default, or one sample below the worst correct agreement where that
                            is below the general default

the worst taken over modality, attention, BatchNorm state, input set and (FP32) exported and optimised
graph, error limits rounded up to two significant digits. MARGIN is 10 in units of score error; 1 - cosine
grows as the square of the error (1 - cos ~ rel_rms**2 / 2 for small errors, as the measurements show), so
the same margin is MARGIN**2 on it. The rule is the same whichever side of the general default
(`runtime.parity.DEFAULT_TOLERANCES`) it lands: tighter for shallow backbones (ResNet-18 FP32 max_rel
2.8e-5), looser for deep ones, whose random-initialised correct artifacts measure up to and beyond the
general default (rounding grows with depth: FP32 max_rel 2e-6 at ResNet-18, 5.6e-4 at ResNet-152); `looser`
names those fields. At FP16 the scores against PyTorch separate no one-channel tamper from rounding at any
depth, which is why parity rebuilds an FP16 graph from its parent (docs/runtime.md, "Parity limits"); for
ResNet-101/152 the FP16 score limits are so loose (max_rel 1.3 and 1.8) that only the rebuild check and
real clips judge them. The general default is what a backbone outside the table gets, and what every
backbone gets on another device than the CPU.

Not judged by default anywhere: max_abs (in units of the scores, whose scale the weights and inputs set:
0.01 for C3D to 28 for ResNet-50 on clips here; max_rel is the same error over the score scale). Not set
per backbone: the accuracy drop (random weights have no accuracy).

    tol = backbone_tolerances(DEFAULT_TOLERANCES["fp32"], "fp32", "resnet18")
    tol.max_rel, tol.source("max_rel")     # 2.8e-05, "fp32 default for resnet18 (measured table)"
"""

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from runtime.compare import LIMITS, Tolerances

MARGIN = 10.0
TUNED = ("max_rel", "min_cosine", "min_top1", "min_top5")  # the tolerance fields the table sets per backbone
INPUT_SETS = ("random", "clips")
AGREEMENT = {"min_top1": "top1", "min_top5": "top5"}
_KIND = {lim.field: lim.kind for lim in LIMITS}  # "max" or "min", by tolerance field

# Derived from benchmarks/results/parity_limits.json by `derive` (tests/runtime/test_parity_limits.py
# checks that the two agree): every measured backbone's limits, by precision.
TABLE: dict[str, dict[str, dict[str, float]]] = {
    "fp32": {
        "resnet18": {"max_rel": 2.8e-05, "min_cosine": 0.99999999964},
        "resnet34": {"max_rel": 4.2e-05, "min_cosine": 0.9999999987},
        "resnet50": {"max_rel": 0.00057, "min_cosine": 0.99999981},
        "resnet101": {"max_rel": 0.0022, "min_cosine": 0.9999975},
        "resnet152": {"max_rel": 0.0057, "min_cosine": 0.999985},
        "vgg16": {"max_rel": 8.7e-06, "min_cosine": 0.999999999971},
        "c3d": {"max_rel": 3.5e-06, "min_cosine": 0.999999999998},
        "resnet3d18": {"max_rel": 4.2e-05, "min_cosine": 0.9999999985},
    },
    "fp16": {
        "resnet18": {"max_rel": 0.02, "min_cosine": 0.99982},
        "resnet34": {"max_rel": 0.036, "min_cosine": 0.99939},
        "resnet50": {"max_rel": 0.33, "min_cosine": 0.949, "min_top1": 0.75, "min_top5": 0.5},
        "resnet101": {"max_rel": 1.3, "min_cosine": 0.01, "min_top1": 0.625, "min_top5": 0.25},
        "resnet152": {"max_rel": 1.8, "min_cosine": -0.5, "min_top1": 0.5, "min_top5": 0.125},
        "vgg16": {"max_rel": 0.0092, "min_cosine": 0.999971},
        "c3d": {"max_rel": 0.0028, "min_cosine": 0.999998},
        "resnet3d18": {"max_rel": 0.022, "min_cosine": 0.99964, "min_top5": 0.75},
    },
}

def looser(general: Tolerances, limits: Mapping[str, float]) -> tuple[str, ...]:
    """The fields of a backbone's measured `limits` that are looser than `general` sets them (10x the worst
    correct artifact is beyond the general limit; at ResNet-50 FP16 and deeper the worst correct artifact
    itself is)."""
    return tuple(f for f, v in limits.items() if getattr(general, f) is not None and (
        v > getattr(general, f) if _KIND[f] == "max" else v < getattr(general, f)))


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
    """Worst correct value per metric for one backbone: largest max_rel, smallest min_cosine, top1, top5
    (None where not measured), and the smallest number of samples a set had."""
    rows = [m for _, m in _rows(measurements, precision, backbone)]
    worst: dict[str, Any] = {"max_rel": max(m["max_rel"] for m in rows),
                             "min_cosine": min(m["min_cosine"] for m in rows),
                             "samples": min(m["samples"] for m in rows)}
    for key in AGREEMENT.values():
        values = [m[key] for m in rows if m.get(key) is not None]
        worst[key] = min(values) if values else None
    return worst


def derive(measurements: Mapping[str, Any], general: Mapping[str, Tolerances]
           ) -> dict[str, dict[str, dict[str, float]]]:
    """The rule of the module docstring applied to `measurements` (the JSON of benchmarks/parity_limits.py)
    and the general defaults by precision: TABLE."""
    backbones = list(dict.fromkeys(r["model"] for r in measurements["results"]))
    table: dict[str, dict[str, dict[str, float]]] = {}
    for precision in ("fp32", "fp16"):
        tol = general[precision]
        for backbone in backbones:
            if not any(True for _ in _rows(measurements, precision, backbone)):
                continue
            worst = worst_correct(measurements, precision, backbone)
            limits: dict[str, float] = {
                "max_rel": ceil2(MARGIN * worst["max_rel"]),
                "min_cosine": round(max(-1.0, 1.0 - ceil2(MARGIN**2 * max(1.0 - worst["min_cosine"], 1e-300))), 15),
            }
            for field, key in AGREEMENT.items():
                limit = getattr(tol, field)
                if limit is not None and worst[key] is not None and worst[key] < limit:
                    limits[field] = round(worst[key] - 1.0 / worst["samples"], 6)
            table.setdefault(precision, {})[backbone] = limits
    return table


def backbone_tolerances(general: Tolerances, precision: str, backbone: str | None, device: str = "cpu"
                        ) -> Tolerances:
    """`general` (the precision's general default) with the backbone's measured limits from TABLE, each
    limit's origin recorded (`Tolerances.source`). A backbone not in the table keeps the general default,
    and so does a comparison that runs on another device than the CPU (`device`, e.g. "cuda:0"): the table
    was measured with onnxruntime's CPU kernels against PyTorch on the CPU."""
    table = TABLE.get(precision, {}).get(backbone or "", {})
    measured = table if device == "cpu" else {}
    loose = looser(general, table)
    sources = {}
    for name in dict.fromkeys([*general.limits(), *measured]):
        if name in measured:
            beyond = " (looser than the general default: 10x the worst correct random-init model is beyond it)"
            sources[name] = f"{precision} default for {backbone} (measured table){beyond if name in loose else ''}"
        elif name in table:
            sources[name] = f"{precision} general default (the {backbone} table was measured on CPU, not {device})"
        else:
            sources[name] = f"{precision} general default"
    return replace(general, **measured, sources=tuple(sources.items()))
