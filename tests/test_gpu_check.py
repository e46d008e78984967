"""benchmarks/gpu_check.py: its judging pieces on synthetic numbers, and the whole --dry-run on the CPU (what CI
runs, so the GPU check cannot rot between GPU loans)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_parity_judges_by_the_precisions_limits(gpu_check):
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((16, 10)).astype(np.float32)
    same = gpu_check.parity(ref + np.float32(1e-7), ref, "fp32")
    assert same["judged"] and same["ok"] and same["top1"] == 1.0
    off = ref.copy()
    off[:, 3] *= 1.05  # a 5% change of one class's score: far beyond FP32 rounding
    bad = gpu_check.parity(off, ref, "fp32")
    assert bad["ok"] is False and any(f.startswith("max_rel") for f in bad["failures"])
    nan = ref.copy()
    nan[0, 0] = np.nan
    assert "non-finite scores" in gpu_check.parity(nan, ref, "fp16")["failures"]
    bf16 = gpu_check.parity(ref, ref, "bf16")  # no measured bf16 limits yet: reported, never passed
    assert bf16["judged"] is False and bf16["ok"] is None and "bf16" in bf16["note"]


def _row(variant, batch, aarm_ms, plain_ms, precision="fp16"):
    return {"variant": variant, "batch": batch, "precision": precision, "status": "ran",
            "device_ms": {"aarm": {"p50": aarm_ms}, "plain": {"p50": plain_ms}}}


def test_goal_compares_each_models_fastest_fp16_configuration_at_the_largest_batch(gpu_check):
    rows = [_row("fp16", 32, 12.0, 10.0), _row("fp16+cl", 32, 11.0, 9.0), _row("fp16+cl", 8, 1.0, 9.0),
            _row("fp32", 32, 1.0, 50.0, precision="fp32")]
    goal = gpu_check.goal({"rows": rows}, dry_run=False)
    assert goal["batch"] == 32 and goal["aarm"]["variant"] == "fp16+cl" and goal["ratio"] == pytest.approx(11 / 9)
    assert goal["status"] == "fail" and goal["limit"] == 1.15
    rows.append(_row("fp16+cl+graphs", 32, 9.5, 9.0))
    assert gpu_check.goal({"rows": rows}, dry_run=False)["status"] == "pass"
    assert gpu_check.goal({"rows": []}, dry_run=False)["status"] == "not measured"


def test_errors_fail_the_run_and_parity_fails_only_the_dry_run(gpu_check):
    bad_parity = {"judged": True, "ok": False, "failures": ["max_abs 0.1 > 0.0001"]}
    row = {**_row("fp32", 1, 1.0, 1.0, "fp32"), "parity": {"aarm": bad_parity, "plain": {"judged": False}}}
    sections = {"environment": {"status": "ran"}, "torch": {"status": "ran", "rows": [row]}}
    result = {"dry_run": False, "sections": sections}
    assert gpu_check.problems(result) == []  # on a GPU, a parity failure is a finding in the files
    result["dry_run"] = True
    assert gpu_check.problems(result) == ["torch fp32 batch 1 aarm: parity max_abs 0.1 > 0.0001"]
    result["sections"]["export"] = {"status": "failed", "error": "RuntimeError: boom"}
    result["sections"]["torch"]["rows"].append({"variant": "fp16", "batch": 8, "status": "failed", "error": "OOM"})
    assert len(gpu_check.problems(result)) == 3


@pytest.mark.slow
def test_dry_run_covers_every_section_on_the_cpu(tmp_path):
    out = tmp_path / "check"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out), "--budget", "400"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((out / "gpu_check.json").read_text())
    sections = result["sections"]
    assert result["dry_run"] is True and sections["environment"]["status"] == "ran"
    assert sections["gpu_tests"]["status"] == "ran" and sections["gpu_tests"]["passed"], sections["gpu_tests"]
    rows = {(r["variant"], r["batch"]): r for r in sections["torch"]["rows"]}
    assert set(rows) == {(v, b) for v in ("fp32", "fp16", "fp16+cl", "fp16+cl+graphs", "bf16+cl") for b in (1, 2)}
    for batch in (1, 2):
        fp32 = rows[("fp32", batch)]
        assert fp32["status"] == "ran" and all(p["ok"] for p in fp32["parity"].values()), fp32["parity"]
        assert fp32["device_ms"]["aarm"]["calls"] >= 2 and fp32["infer_ms"]["plain"]["p50"] > 0
        assert rows[("fp16+cl", batch)]["status"] == "ran" and rows[("bf16+cl", batch)]["status"] == "ran"
        graphs = rows[("fp16+cl+graphs", batch)]
        assert graphs["status"] == "skipped" and "CUDA graphs need a CUDA device" in graphs["reason"]
    assert sections["export"]["status"] == "ran"
    ort = sections["onnxruntime"]["providers"]["cpu"]
    assert ort["status"] == "ran" and all(r["status"] == "ran" and r["parity"]["aarm"]["ok"] for r in ort["rows"])
    trt = sections["tensorrt"]
    if importlib.util.find_spec("tensorrt") is None:
        assert trt["status"] == "skipped" and "not importable" in trt["reason"]
        assert trt["plans"]["aarm.fp16"]["input"]["max"][0] == 2  # the profile's max batch: the largest batch
    assert result["goal"]["status"] in ("pass", "fail") and "dry run" in result["goal"]["note"]
    markdown = (out / "gpu_check.md").read_text()
    assert "## Goal" in markdown and "| fp16+cl | 2 |" in markdown
