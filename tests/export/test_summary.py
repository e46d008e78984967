"""The pipeline summary speaks the bench's convention: speed-up over PyTorch, higher is faster, from the median,
with the bench's interval and the baseline named in the header."""

import json
import time

import numpy as np
import pytest

from aarm.errors import ConfigError
from aarm.fileio import write_json
from export.summary import format_rows, summary_columns, summary_rows
from runtime.bench import benchmark
from runtime.runner import InputSpec, Runner


class Sleeper(Runner):
    """A runner with a known cost: sleeps `seconds` per call; input (N, 4), output scores = input."""

    def __init__(self, name: str, seconds: float, backend: str) -> None:
        super().__init__(name=name, inputs=[InputSpec("input", ("N", 4))], outputs=["scores"])
        self.seconds, self.backend = seconds, backend

    @property
    def provider(self) -> str:
        return "sleep"

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        time.sleep(self.seconds)
        return {"scores": feed["input"]}


def _parity(name: str, passed: bool) -> dict:
    return {"kind": "parity", "artifact": {"path": f"/deploy/{name}", "name": name}, "passed": passed,
            "metrics": {"random": {"top1": 1.0, "max_abs": 1e-6}}}


def test_summary_speedup_is_the_bench_speedup(tmp_path):
    bench = benchmark([Sleeper("model.pt", 0.02, "torch"), Sleeper("model.onnx", 0.005, "onnxruntime")],
                      batches=[1, 2], iterations=8, rounds=4, warmup=1, flops=False, reference=False,
                      memory=False).to_json()
    bench_json = write_json(tmp_path / "bench.json", bench)
    parity_json = write_json(tmp_path / "parity.json", [_parity("model.onnx", True)])
    rows = summary_rows(parity_json, bench_json)
    assert [r["artifact"] for r in rows] == ["model.pt", "model.onnx"] and rows[0]["batch"] == 2
    onnx_bench = bench["results"][3]["speedup"]  # batch 2, model.onnx
    assert rows[1]["speedup"] == pytest.approx(onnx_bench["value"]) and rows[1]["speedup"] > 1  # faster: above 1
    assert rows[1]["speedup_interval"][:2] == (onnx_bench["low"], onnx_bench["high"])
    assert rows[1]["clips_per_s"] == pytest.approx(2e3 / rows[1]["p50_ms"])
    columns = summary_columns(rows)
    assert "speed-up vs model.pt (x, higher is faster)" in columns and "95% interval" in columns
    table = format_rows(rows)
    assert table[0][-2:] == ("1.00x", "baseline") and table[0][5] == "reference"
    assert table[1][-2] == f"{rows[1]['speedup']:.2f}x" and table[1][-1].startswith(f"{onnx_bench['low']:.2f}-")
    bench["version"] = 1
    bench_json.write_text(json.dumps(bench))
    with pytest.raises(ConfigError, match="bench result version 1"):
        summary_rows(parity_json, bench_json)
