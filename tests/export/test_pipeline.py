"""End to end: a tiny trained model through every pipeline stage, then a re-run that skips them all."""

import json

import pytest
import torch

from aarm.data.synthetic import make_synthetic
from aarm.training import TrainConfig, train
from export.pipeline import run_pipeline
from export.pipeline_config import PipelineConfig
from export.summary import summary_rows
from runtime.artifact import read_sidecar


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("pipeline")
    make_synthetic(root / "data", classes=3, videos_per_class=4, frames=12, size=48, seed=2)
    train(TrainConfig(data=str(root / "data"), out=str(root / "train"), model="resnet18", epochs=1, batch_size=4,
                      lr=0.01, size=32, segments=2, workers=0))
    return root


def test_pipeline_makes_every_artifact_and_resumes(trained):
    out = trained / "deploy"
    cfg = PipelineConfig(checkpoint=str(trained / "train" / "best.pt"), out=str(out), data=str(trained / "data"),
                         calibration_clips=4, eval_clips=6, parity_samples=4, bench_batches=[2],
                         bench_iterations=2, threads=1)
    lines: list[str] = []
    result = run_pipeline(cfg, log=lines.append)
    for name in ("model.onnx", "model.opt.onnx", "model.kernels.onnx", "model.fp16.onnx", "model.int8.onnx"):
        assert read_sidecar(out / name).sha256  # present and matching its sidecar
    assert read_sidecar(out / "model.kernels.onnx").extra["custom_ops"]["domain"] == "com.aarm"
    assert read_sidecar(out / "model.int8.onnx").precision == "int8"
    assert any(line.startswith("tensorrt: skipped") for line in lines)  # no TensorRT here, said so
    parity = json.loads((out / "parity.json").read_text())
    assert {p["precision"] for p in parity} == {"fp32", "fp16", "int8"}
    fp32 = next(p for p in parity if p["artifact"]["name"] == "model.onnx")
    assert fp32["passed"] and "data" in fp32["metrics"]
    kernels = next(p for p in parity if p["artifact"]["name"] == "model.kernels.onnx")  # the CPU graph, checked too
    assert kernels["passed"] and "data" in kernels["metrics"]
    fp16 = next(p for p in parity if p["precision"] == "fp16")  # checked against its parent converted again
    assert fp16["rebuild"]["metrics"]["max_abs"] == 0.0 and fp16["passed"]
    rows = summary_rows(out / "parity.json", out / "bench.json")
    assert rows[0]["backend"] == "torch" and len(rows) == 6
    assert (out / "report.html").read_text().count("data:image/png;base64") >= 2
    assert (out / "triton" / "aarm_fp32" / "config.pbtxt").is_file()
    assert not (out / "triton" / "aarm_fp32_kernels").exists()  # Triton cannot load the kernel library: said so
    assert any(line.startswith("triton: fp32-kernels left out") for line in lines)
    assert all(not s.skipped for k, s in result.stages.items() if k != "artifacts")

    again: list[str] = []
    second = run_pipeline(cfg, log=again.append)
    assert all(s.skipped for k, s in second.stages.items() if k != "artifacts"), again

    (out / "model.fp16.onnx").write_bytes(b"broken")  # a damaged output is remade, nothing else
    third = run_pipeline(cfg, log=[].append)
    assert not third.stages["fp16"].skipped and third.stages["export"].skipped
    assert read_sidecar(out / "model.fp16.onnx").precision == "fp16"
