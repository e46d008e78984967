"""Benchmark statistics on a known workload, FLOP counting, and the bench command."""

import json

import numpy as np
import pytest
from sleepy import SleepRunner
from typer.testing import CliRunner

from aarm.errors import AarmError, ConfigError
from export.cli import app
from runtime.bench import benchmark, count_onnx_flops, count_torch_flops, latency_stats, runner_flops
from runtime.runner import open_runner


def test_latency_stats_of_known_samples():
    s = latency_stats([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (s["min"], s["p50"], s["mean"], s["max"]) == (1.0, 3.0, 3.0, 5.0)
    assert s["p90"] == pytest.approx(4.6) and s["p99"] == pytest.approx(4.96)
    with pytest.raises(ConfigError):
        latency_stats([])


def test_benchmark_of_sleeping_runners():
    fast, slow = SleepRunner("fast", 0.010), SleepRunner("slow", 0.020)
    result = benchmark([fast, slow], batches=[1, 3], iterations=10, warmup=1, rounds=2, flops=False,
                       reference=False)
    assert result["kind"] == "bench" and len(result["results"]) == 4
    by = {(r["name"], r["batch"]): r for r in result["results"]}
    for (name, batch), r in by.items():
        lat = r["latency_ms"]
        assert r["iterations"] == len(r["samples_ms"]) == 10
        assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        want = 10.0 if name == "fast" else 20.0
        assert want <= lat["p50"] < want + 8, (name, lat)  # sleep never returns early; overshoot is small
        assert r["throughput"]["clips_per_s"] == pytest.approx(batch * 1e3 / lat["mean"])
        assert r["throughput"]["frames_per_s"] == r["throughput"]["clips_per_s"]  # no preprocessing: 1 frame
    for batch in (1, 3):
        assert by[("fast", batch)]["ratio_to_first"] == 1.0
        assert 1.4 < by[("slow", batch)]["ratio_to_first"] < 2.2
        assert by[("slow", batch)]["ratio_to_first"] == pytest.approx(
            by[("slow", batch)]["latency_ms"]["p50"] / by[("fast", batch)]["latency_ms"]["p50"])
    assert not fast.is_active and not slow.is_active


def test_benchmark_by_duration_and_bad_settings():
    r = SleepRunner("r", 0.005)
    result = benchmark([r], duration=0.06, rounds=3, warmup=0, flops=False, reference=False)
    n = result["results"][0]["iterations"]
    assert 3 <= n <= 14
    with pytest.raises(ConfigError, match="either iterations or duration, not both"):
        benchmark([r], iterations=5, duration=1.0)
    with pytest.raises(ConfigError, match="no runners"):
        benchmark([])


def test_flops_from_onnx_graph_match_pytorch(tiny):
    onnx_count = count_onnx_flops(tiny.onnx)
    assert onnx_count.skipped == 0 and onnx_count.counted > 20
    assert onnx_count.flops == count_torch_flops(tiny.model, (1, 2, 3, 32, 32))
    assert count_onnx_flops(tiny.onnx, batch=4).flops == 4 * onnx_count.flops
    assert runner_flops(open_runner(tiny.onnx)) == onnx_count.flops
    assert runner_flops(open_runner(tiny.checkpoint)) == onnx_count.flops


def test_bench_command(tiny, tmp_path):
    out = tmp_path / "bench.json"
    args = ["bench", str(tiny.onnx), str(tiny.checkpoint), "--batch", "1,2", "--iterations", "4", "--warmup", "1",
            "--rounds", "2", "--threads", "1", "--json", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "Benchmark" in res.output and "matmul reference on cpu" in res.output
    data = json.loads(out.read_text())
    assert data["kind"] == "bench" and data["host"]["cores"] >= 1
    rows = data["results"]
    assert [(r["name"], r["batch"]) for r in rows] == [
        ("model.onnx", 1), ("model.pt", 1), ("model.onnx", 2), ("model.pt", 2)]
    assert rows[0]["ratio_to_first"] == 1.0 and rows[0]["provider"] == "CPUExecutionProvider"
    assert rows[1]["provider"] == "torch-cpu"
    for r in rows:
        assert len(r["samples_ms"]) == 4 and r["flops_per_clip"] > 1e8
        assert r["throughput"]["frames_per_s"] == pytest.approx(2 * r["throughput"]["clips_per_s"])  # K = 2
        assert 0 < r["fraction_of_matmul"] < 10 and r["memory"]["cpu_peak_delta_mb"] >= 0
    assert np.isfinite(data["reference"][0]["matmul_flops_per_s"])
    res = CliRunner().invoke(app, args)  # no overwrite without --force
    assert isinstance(res.exception, AarmError) and "--force" in str(res.exception)
