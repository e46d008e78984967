"""Parity: a faithful artifact passes, altered weights fail it, a tampered file is refused."""

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from runtime_artifacts import derive_artifact
from typer.testing import CliRunner

from aarm.errors import ArtifactError, DataError
from export.cli import app
from runtime.artifact import sidecar_path
from runtime.parity import (
    DEFAULT_TOLERANCES,
    ParityFailure,
    Tolerances,
    check_tolerances,
    compare,
    default_tolerances,
    labelled_batches,
    parity_failures,
    score_metrics,
)
from runtime.runner import open_runner


@pytest.fixture(scope="module")
def altered(tiny, tmp_path_factory):
    """tiny.onnx with one convolution's weights perturbed by 5%, and a valid sidecar for it."""
    model = onnx.load(str(tiny.onnx))
    conv_weights = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    init = next(i for i in model.graph.initializer if i.name in conv_weights and len(i.dims) == 4)
    w = numpy_helper.to_array(init)
    init.CopyFrom(numpy_helper.from_array(w * 1.05, init.name))
    return derive_artifact(tiny.onnx, model, tmp_path_factory.mktemp("altered") / "model.onnx")


def test_score_metrics_of_known_scores():
    ref = np.array([[1.0, 2.0, 3.0], [3.0, 1.0, 0.0]])
    m = score_metrics(ref + [[0.0, 0.0, 0.3], [0.0, 0.0, 0.0]], ref)
    assert m["max_abs"] == pytest.approx(0.3) and m["max_rel"] == pytest.approx(0.1)
    assert m["top1"] == 1.0 and m["top5"] == 1.0 and m["min_cosine"] < 1.0
    m = score_metrics(ref[:, ::-1].copy(), ref)
    assert m["top1"] == 0.0 and m["top5"] == 1.0  # the same three classes, reversed
    fails = check_tolerances(m, Tolerances(min_top1=0.5, max_abs=10.0))
    assert fails == ["top1 0 < 0.5"]


def test_exported_graph_matches_its_checkpoint(tiny):
    result = compare(open_runner(tiny.onnx, threads=1), open_runner(tiny.checkpoint), samples=12, batch=6)
    assert result, result.failures
    m = result.metrics["random"]
    assert m["samples"] == 12 and m["max_abs"] < 1e-4 and m["top1"] == 1.0 and m["min_cosine"] > 0.99999
    d = result.to_dict()
    assert d["kind"] == "parity" and d["passed"] and d["tolerances"] == DEFAULT_TOLERANCES["fp32"].__dict__


def test_altered_weights_fail_parity(tiny, altered):
    result = compare(open_runner(altered, threads=1), open_runner(tiny.checkpoint), samples=8, batch=8)
    assert not result
    assert any(f.startswith("random: max_abs") for f in result.failures)
    assert any(f.startswith("random: max_rel") for f in result.failures)


def test_parity_command_fails_on_altered_weights_and_passes_with_loose_tolerances(tiny, altered, tmp_path):
    out = tmp_path / "parity.json"
    base = ["parity", str(altered), "--reference", str(tiny.checkpoint), "--samples", "8", "--threads", "1"]
    res = CliRunner().invoke(app, [*base, "--json", str(out)])
    assert isinstance(res.exception, ParityFailure), res.output
    assert "max_abs" in str(res.exception)
    data = json.loads(out.read_text())
    assert data["kind"] == "parity" and not data["passed"] and data["failures"]
    res = CliRunner().invoke(app, [*base, "--atol", "1e3", "--rtol", "1e3", "--min-cosine", "-1", "--min-top1", "0",
                                   "--min-top5", "0"])
    assert res.exit_code == 0, res.output


def test_parity_command_refuses_a_tampered_artifact(tiny, tmp_path):
    bad = tmp_path / "model.onnx"
    model = onnx.load(str(tiny.onnx))
    model.graph.initializer[0].raw_data = bytes(len(model.graph.initializer[0].raw_data))
    onnx.save(model, str(bad))
    sidecar_path(bad).write_text(sidecar_path(tiny.onnx).read_text())  # the original's sidecar, old sha256
    res = CliRunner().invoke(app, ["parity", str(bad), "--reference", str(tiny.checkpoint), "--samples", "4"])
    assert isinstance(res.exception, ArtifactError) and "sha256" in str(res.exception)


def test_parity_on_labelled_clips(tiny, videos, tmp_path):
    out = tmp_path / "parity.json"
    res = CliRunner().invoke(app, ["parity", str(tiny.onnx), "--reference", str(tiny.checkpoint), "--data",
                                   str(videos), "--samples", "4", "--batch", "3", "--threads", "1", "--json", str(out)])
    assert res.exit_code == 0, res.output
    m = json.loads(out.read_text())["metrics"]
    assert m["random"]["samples"] == 4 and m["data"]["samples"] == 4
    assert m["data"]["accuracy"] == m["data"]["reference_accuracy"] and m["data"]["accuracy_drop"] == 0.0
    with pytest.raises(DataError, match="classes are not the model's"):
        next(iter(labelled_batches(str(videos), tiny.preprocessing, ["input"], classes=["a", "b"])))


def test_int8_parity_is_judged_on_real_clips_when_it_has_them():
    noisy = {"max_rel": 1.3, "min_cosine": -0.5, "mean_cosine": 0.6, "top1": 0.0, "top5": 0.5}
    close = {"max_rel": 0.05, "min_cosine": 0.948, "mean_cosine": 0.993, "top1": 1.0, "top5": 1.0,
             "accuracy_drop": 0.0}  # the demo's INT8 graph on its held-out clips
    int8, fp32 = default_tolerances("int8"), default_tolerances("fp32")
    assert parity_failures({"random": noisy, "data": close}, int8) == []
    assert parity_failures({"random": noisy}, int8)  # nothing else to judge by
    assert parity_failures({"random": noisy, "data": close}, fp32)[0].startswith("random: ")
    tie = {"max_rel": 0.002, "min_cosine": 1.0, "top1": 0.9375, "top5": 1.0}  # 1 of 16 noise clips flipped
    assert parity_failures({"random": tie, "data": {**close, "min_cosine": 1.0, "max_rel": 4e-4}},
                           default_tolerances("fp16")) == []
    assert parity_failures({"random": close, "data": noisy}, int8)[0].startswith("data: ")
    assert parity_failures({"data": {**close, "mean_cosine": 0.97}}, int8) == ["data: mean_cosine 0.97 < 0.98"]
