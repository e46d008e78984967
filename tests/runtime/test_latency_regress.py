"""Latency regression: passes on the same artifact, fails on a deliberately slowed one, skips elsewhere.

Every check compares ratios measured in the same run, and fails only when the whole bootstrap interval
is over the limit; the slowed artifacts are several times slower, far beyond the margins used here.
"""

import json

import numpy as np
import pytest
from runtime_artifacts import derive_artifact, slowed_graph
from sleepy import SleepRunner, SlowedRunner, SpinningNeighbourRunner
from typer.testing import CliRunner

from aarm.errors import AarmError
from export.cli import app
from runtime.backends import open_runner
from runtime.regress import (
    LatencyRegression,
    assert_ratio,
    bootstrap_median_interval,
    check_regression,
    fingerprint,
    record_baseline,
    reference_runner,
)

FAST = {"trials": 5, "iterations": 4}


@pytest.fixture(scope="module")
def slow(tiny, tmp_path_factory):
    """tiny.onnx with heavy convolutions added (same scores), a valid artifact."""
    return derive_artifact(tiny.onnx, slowed_graph(tiny.onnx, convs=6), tmp_path_factory.mktemp("slow") / "slow.onnx")


def test_bootstrap_interval_brackets_the_median():
    assert bootstrap_median_interval([2.0] * 5) == (2.0, 2.0)
    values = [1.0, 1.1, 0.9, 1.05, 0.95, 1.2, 0.8]
    low, high = bootstrap_median_interval(values)
    assert min(values) <= low <= float(np.median(values)) <= high <= max(values)


def test_assert_ratio_on_known_workloads():
    m = assert_ratio(SleepRunner("a", 0.004), SleepRunner("b", 0.004), 1.5, trials=5, iterations=3)
    assert 0.7 < m.ratio < 1.3 and len(m.ratios) == 5 and m.low <= m.ratio <= m.high
    with pytest.raises(LatencyRegression, match="over the budget of 1.500x"):
        assert_ratio(SleepRunner("slow", 0.012), SleepRunner("fast", 0.004), 1.5, trials=5, iterations=3)


def test_ratio_is_not_measured_beside_the_other_runners_spinning_threads():
    """A costs 4 ms, B 8 ms, and a call within 45 ms of the other's pays 8 ms more (onnxruntime's workers spin
    after a call): alternating call by call measured 12 / 16 = 0.75; in blocks after the idle time, 0.5."""
    from runtime.regress import measure_ratio

    a, b = SpinningNeighbourRunner("a", 0.004, 0.008, 0.045), SpinningNeighbourRunner("b", 0.008, 0.008, 0.045)
    m = measure_ratio(a, b, trials=4, iterations=3, warmup=1)
    assert 0.4 < m.ratio < 0.62, m


def test_assert_ratio_on_artifacts(tiny, slow):
    m = assert_ratio(tiny.onnx, tiny.onnx, 1.3, **FAST)
    assert m.a == m.b == "model.onnx"
    with pytest.raises(LatencyRegression, match="slow.onnx / model.onnx"):
        assert_ratio(slow, tiny.onnx, 1.3, **FAST)
    inner = open_runner(tiny.onnx, threads=1)
    with pytest.raises(LatencyRegression):
        assert_ratio(SlowedRunner(inner, 0.02), inner, 1.3, **FAST)


def test_reference_workload_runs_where_the_artifact_runs(tiny):
    for workload, shape in [("mixed", (2, 1, 2048)), ("matmul", (2, 128, 384)), ("stream", (2, 1, 2048))]:
        ref = reference_runner(workload, threads=1)
        assert ref.provider == "CPUExecutionProvider" and ref.name == f"reference:{workload}"
        with ref:
            y = ref.infer(ref.example_feed(2))["y"]
        assert y.shape == shape and (y >= 0).all()
    with pytest.raises(AarmError, match="unknown reference workload"):
        reference_runner("sleep")
    fp = fingerprint(open_runner(tiny.onnx, threads=1))
    assert fp["provider"] == "CPUExecutionProvider" and fp["threads"] == 1 and fp["cores"] >= 1 and fp["cpu"]


def test_baseline_pass_fail_and_skip(tiny, slow, tmp_path):
    base = tmp_path / "baseline.json"
    with pytest.raises(AarmError, match="not found; record one with `record_baseline`"):
        check_regression(open_runner(tiny.onnx, threads=1), base)
    recorded = record_baseline(open_runner(tiny.onnx, threads=1), base, **FAST)
    assert recorded.status == "updated" and base.is_file()
    ok = check_regression(open_runner(tiny.onnx, threads=1), base, tolerance=0.4, **FAST)
    assert ok.status == "pass" and ok, ok.reason
    bad = check_regression(open_runner(slow, threads=1), base, key="model.onnx", tolerance=0.4, **FAST)
    assert bad.status == "fail" and not bad, bad.reason
    assert bad.measurement.low > bad.threshold
    with pytest.raises(AarmError, match="no baseline for 'slow.onnx'"):
        check_regression(open_runner(slow, threads=1), base)
    data = json.loads(base.read_text())
    entry = data["entries"].pop(next(iter(data["entries"])))
    entry["fingerprint"]["cpu"] = "Some Other CPU"
    data["entries"]["0123456789abcdef"] = entry
    base.write_text(json.dumps(data))
    skipped = check_regression(open_runner(tiny.onnx, threads=1), base)
    assert skipped.status == "skipped" and "fingerprint differs" in skipped.reason
    assert "Some Other CPU" in skipped.reason
    assert skipped.measurement is None


def test_regress_command(tiny, slow, tmp_path):
    base = tmp_path / "baseline.json"
    opts = ["--trials", "5", "--iterations", "4", "--tolerance", "0.4"]
    res = CliRunner().invoke(app, ["regress", str(tiny.onnx), "--baseline", str(base), *opts])
    assert str(res.exception) == f"baseline file {base} not found; record one with --update"  # the flag
    res = CliRunner().invoke(app, ["regress", str(tiny.onnx), "--baseline", str(base), "--update", *opts])
    assert res.exit_code == 0 and "updated" in res.output, res.output
    res = CliRunner().invoke(app, ["regress", str(tiny.onnx), "--baseline", str(base), *opts])
    assert res.exit_code == 0 and res.output.startswith("pass: ") and "[model.onnx]" in res.output, res.output
    out = tmp_path / "regress.json"
    res = CliRunner().invoke(app, ["regress", str(slow), "--baseline", str(base), "--key", "model.onnx", *opts,
                                   "--json", str(out)])
    assert isinstance(res.exception, LatencyRegression) and "over the 40% tolerance" in str(res.exception)
    assert json.loads(out.read_text())["status"] == "fail"
    res = CliRunner().invoke(app, ["regress", str(slow), "--against", str(tiny.onnx), "--max-ratio", "1.3", *opts])
    assert isinstance(res.exception, LatencyRegression)
    data = json.loads(base.read_text())
    data["entries"] = {"0123456789abcdef": {**next(iter(data["entries"].values()))}}
    data["entries"]["0123456789abcdef"]["fingerprint"] = {"cpu": "elsewhere"}
    base.write_text(json.dumps(data))
    res = CliRunner().invoke(app, ["regress", str(tiny.onnx), "--baseline", str(base), *opts])
    assert res.exit_code == 0 and res.output.startswith("skipped: fingerprint differs"), res.output


@pytest.mark.latency
def test_latency_fixture(latency, tiny, slow, tmp_path):
    m = latency.assert_ratio(tiny.onnx, tiny.onnx, 1.3, iterations=4)
    assert len(m.ratios) == latency.trials
    with pytest.raises(LatencyRegression):
        latency.assert_ratio(slow, tiny.onnx, 1.3, iterations=4)
    base = tmp_path / "baseline.json"
    base.write_text(json.dumps({"format": "aarm-latency-baseline", "version": 1, "entries": {}}))
    with pytest.raises(pytest.skip.Exception, match="fingerprint differs"):
        latency.check_baseline(tiny.onnx, base)
