"""The project's latency budgets, as ratios measured in the same run (runtime.regress via the `latency` fixture).

ResNet-18 TSN (K = 1) at 112x112, batch 1, one onnxruntime CPU thread. A check fails only when the whole
bootstrap interval of the ratio lies over its budget.

- AARM over its plain backbone: the design's target is 15%, measured here at 9-14% (median) on a quiet
  machine; AARM's extra cost is memory traffic, so when other work saturates the shared memory bus the
  measured overhead rises to about 20%. The test budget, 30%, leaves room for that and still catches a
  real regression (the naive fusion alone added about 40% on ResNet-50). The 15% target itself belongs to
  the benchmark scripts, measured on a quiet machine.
- Graph passes: the optimised graph may not be slower than the exported one (5% for noise).
"""

from pathlib import Path

import pytest
import torch
from shared_fixtures import export_artifact

import aarm
from aarm.data.preprocessing import Preprocessing

pytestmark = pytest.mark.latency

AARM_OVERHEAD_BUDGET = 1.30


@pytest.fixture(scope="module")
def resnet18_112(export_cache: Path) -> dict[str, Path]:
    """Exported ResNet-18 at 112x112 with AARM and without attention (same seed)."""
    paths = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    for attention in ("aarm", "none"):
        torch.manual_seed(0)
        model = aarm.create_model("resnet18", num_classes=10, attention=attention, segments=1).eval()
        prep = Preprocessing.for_model(model.aarm_config, size=112)
        paths[attention] = export_artifact(model, export_cache, f"resnet18-112-{attention}",
                                           classes=[f"c{i}" for i in range(10)], preprocessing=prep)
    torch.set_num_threads(threads)
    return paths


def test_aarm_overhead_over_plain_backbone_within_budget(latency, resnet18_112):
    m = latency.assert_ratio(resnet18_112["aarm"], resnet18_112["none"], AARM_OVERHEAD_BUDGET, iterations=6)
    assert m.ratio > 1.0  # AARM adds work; a ratio below 1 means the pair was mixed up


def test_optimised_graph_no_slower_than_exported(latency, resnet18_112, tmp_path):
    from export.passes import optimize_onnx

    opt = tmp_path / "model.opt.onnx"
    optimize_onnx(resnet18_112["aarm"], opt)
    latency.assert_ratio(opt, resnet18_112["aarm"], 1.05, iterations=6)
