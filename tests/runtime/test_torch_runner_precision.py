"""PyTorch runner options: fp16 / bf16, channels-last and CUDA graphs (what runs on the CPU here, what is refused
here, and the CUDA paths where a GPU exists), from the Python API and the CLI."""

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from aarm.errors import ConfigError
from export.cli import app
from runtime.backends import open_runner
from runtime.backends.torch_backend import TorchRunner, to_channels_last
from runtime.parity import default_tolerances

HAVE_CUDA = torch.cuda.is_available()


def _clips(tiny, n=4, seed=1):
    return np.random.default_rng(seed).standard_normal((n, *tiny.preprocessing.input_shape(1)[1:]), dtype=np.float32)


def _reference(tiny, x):
    with torch.inference_mode():
        return tiny.model(torch.from_numpy(x)).numpy()


def score_metrics(scores, reference):
    """max_abs, max_rel (to the largest reference score), min_cosine and top1 agreement of (N, C) scores."""
    a, b = scores.astype(np.float64), reference.astype(np.float64)
    diff = np.abs(a - b)
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"max_abs": diff.max(), "max_rel": diff.max() / np.abs(b).max(), "min_cosine": cosine.min(),
            "top1": np.mean(a.argmax(1) == b.argmax(1))}


def _scores(runner, x):
    with runner:
        return runner.infer({"input": x})["scores"]


def test_channels_last_on_cpu_is_the_same_fp32_maths(tiny):
    x = _clips(tiny)
    runner = open_runner(tiny.checkpoint, channels_last=True)
    assert runner.precision == "fp32" and runner.describe()["channels_last"] is True
    scores = _scores(runner, x)
    assert scores.dtype == np.float32
    metrics = score_metrics(scores, _reference(tiny, x))
    tol = default_tolerances("fp32", "resnet18")  # the tiny model's backbone: its measured FP32 limits, on the CPU
    assert metrics["max_rel"] <= tol.max_rel and metrics["min_cosine"] >= tol.min_cosine and metrics["top1"] == 1.0


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_runs_on_cpu_and_leaves_the_reference_module_alone(tiny, precision):
    x = _clips(tiny)
    runner = open_runner(tiny.checkpoint, precision=precision, channels_last=precision == "bf16")
    assert runner.precision == precision
    with runner:
        scores = runner.infer({"input": x})["scores"]
        ran = {p.dtype for p in runner._module.parameters()}
    assert ran == {{"bf16": torch.bfloat16, "fp16": torch.float16}[precision]}
    assert {p.dtype for p in runner.model.parameters()} == {torch.float32}  # the reference is not cast
    assert scores.dtype == np.float32 and np.isfinite(scores).all()
    metrics = score_metrics(scores, _reference(tiny, x))
    assert metrics["max_abs"] > 0  # it really ran in reduced precision
    if precision == "fp16":  # the fp16 parity limits (measured: max rel 0.0023, min cosine 0.9999991 here)
        tol = default_tolerances("fp16")
        assert metrics["max_rel"] <= tol.max_rel and metrics["min_cosine"] >= tol.min_cosine
    else:  # no bf16 limits yet; measured here max rel 0.0117, min cosine 0.99993 (8-bit mantissa: ~8x fp16's)
        assert metrics["max_rel"] <= 0.05 and metrics["min_cosine"] >= 0.999


def test_cuda_only_options_and_unknown_precisions_are_refused(tiny):
    with pytest.raises(ConfigError, match="CUDA graphs need a CUDA device"):
        open_runner(tiny.checkpoint, cuda_graphs=True)
    with pytest.raises(ConfigError, match="unknown precision 'int8'"):
        open_runner(tiny.checkpoint, precision="int8")
    with pytest.raises(ConfigError, match="unknown precision"):
        TorchRunner(tiny.model, preprocessing=tiny.preprocessing, precision="fp64")


def test_channels_last_converts_4d_and_5d_tensors():
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv3d(4, 4, 3), torch.nn.Linear(4, 2))
    to_channels_last(module)
    assert module[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert module[1].weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert module[2].weight.is_contiguous()


def test_cli_takes_the_torch_options_and_refuses_them_for_graphs(tiny, tmp_path):
    cli = CliRunner()
    out = tmp_path / "bench.json"
    result = cli.invoke(app, ["bench", str(tiny.checkpoint), "--precision", "bf16", "--channels-last",
                              "--iterations", "2", "--rounds", "1", "--warmup", "1", "--no-flops", "--threads", "1",
                              "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert '"precision": "bf16"' in out.read_text() and '"channels_last": true' in out.read_text()
    result = cli.invoke(app, ["bench", str(tiny.onnx), "--precision", "fp16", "--iterations", "1"])
    assert result.exit_code != 0 and isinstance(result.exception, ConfigError)
    assert "--precision apply to PyTorch checkpoints" in str(result.exception)
    result = cli.invoke(app, ["parity", str(tiny.checkpoint), "--reference", str(tiny.checkpoint), "--cuda-graphs",
                              "--samples", "2"])
    assert result.exit_code != 0 and "CUDA graphs need a CUDA device" in str(result.exception)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_cuda_runner_with_graphs_matches_the_cpu_reference(tiny, precision):
    if not HAVE_CUDA:
        pytest.skip("needs a CUDA GPU")
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    x = _clips(tiny, n=8)
    ref = _reference(tiny, x)
    eager = _scores(open_runner(tiny.checkpoint, device="cuda", precision=precision, channels_last=True), x)
    runner = open_runner(tiny.checkpoint, device="cuda:0", precision=precision, channels_last=True, cuda_graphs=True)
    with runner:
        first = runner.infer({"input": x})["scores"]
        again = runner.infer({"input": x[::-1].copy()})["scores"]  # replay with new data in the static input
        small = runner.infer({"input": x[:2]})["scores"]  # another batch size: another graph
        assert runner.describe()["graphs_captured"] == [2, 8]
    close = {"rtol": 1e-5, "atol": 1e-6} if precision == "fp32" else {"rtol": 1e-2, "atol": 1e-3}
    np.testing.assert_allclose(first, eager, **close)  # replaying the graph computes what eager mode does
    np.testing.assert_allclose(again, first[::-1], **close)  # on the new data copied into its static input
    np.testing.assert_allclose(small, first[:2], **close)
    tol = default_tolerances("fp32" if precision == "fp32" else "fp16")
    metrics = score_metrics(first, ref)
    if precision == "fp32":  # strict FP32 (TF32 off): rounding-level differences only
        assert metrics["max_rel"] <= tol.max_rel and metrics["min_cosine"] >= tol.min_cosine
    else:
        assert metrics["max_rel"] <= tol.max_rel and metrics["min_cosine"] >= tol.min_cosine
