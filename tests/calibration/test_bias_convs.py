"""The cpu target's per-channel bias adds as depthwise 1x1 convolutions (calibration.bias_convs): an exact float
rewrite, and an INT8 graph whose optimised onnxruntime session runs AARM's fusion bias as a quantized depthwise
convolution (threaded) instead of a broadcast QLinearAdd (one thread), at the same accuracy."""

import copy
from dataclasses import replace

import numpy as np
import onnx
import pytest
import torch

from calibration.bias_convs import rewrite_bias_adds
from calibration.quantize import calibrate, session_graph
from calibration.sensitivity import graph_scores
from calibration.uint8_pools import tensor_dims
from export.onnx_export import export_onnx
from export.passes import run_passes

BLOCKS = 8  # AARM blocks of the tiny ResNet-18, one fusion bias each
MAP_BLOCKS = 6  # those whose map is larger than 1x1 (layer4's is 1x1 at 32x32: nothing to split over threads)


@pytest.fixture(scope="module")
def biased(tiny, tmp_path_factory):
    """The tiny AARM model with its fusion weights and biases moved off their 1 / 0 start, as training leaves them
    (at 0 the standard-op passes drop the bias add), exported with its sidecar."""
    model = copy.deepcopy(tiny.model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("fuse.conv.weight"):
                p.add_(0.1 * torch.randn(p.shape, generator=generator))
            elif name.endswith("fuse.conv.bias"):
                p.copy_(0.05 * torch.randn(p.shape, generator=generator))
    out = tmp_path_factory.mktemp("bias_convs") / "model.onnx"
    export_onnx(model, out, classes=tiny.classes, preprocessing=tiny.preprocessing, trained=False)
    return out


@pytest.fixture(scope="module")
def passes_graph(biased) -> onnx.ModelProto:
    return run_passes(onnx.load(str(biased)))[0]


@pytest.fixture(scope="module")
def users_int8(biased, users_config, tmp_path_factory):
    """The users' path: calibrate on the exported graph with the standard-op passes first, cpu target."""
    out = tmp_path_factory.mktemp("bias_convs_int8") / "model.int8.onnx"
    return calibrate(biased, out, users_config, graph_passes=run_passes)


def _bias_adds(model: onnx.ModelProto, *, larger_than_1x1: bool = True) -> list[str]:
    """Add nodes of a 4-D tensor and a per-channel (1, C, 1, 1) constant; by default only those on maps larger
    than 1x1."""
    constants = {t.name: list(t.dims) for t in model.graph.initializer}
    dims = tensor_dims(model)
    return [n.name for n in model.graph.node if n.op_type == "Add"
            and any(len(constants.get(i, [])) == 4 and constants[i][1] > 1 and constants[i][0] == 1
                    and constants[i][2:] == [1, 1] for i in n.input)
            and (not larger_than_1x1 or np.prod(dims[n.output[0]][2:]) > 1)]


def _unused_initializers(model: onnx.ModelProto) -> set[str]:
    used = {i for n in model.graph.node for i in n.input}
    return {t.name for t in model.graph.initializer if t.name not in used}


def test_rewrite_is_exact_in_float(passes_graph, tiny):
    assert len(_bias_adds(passes_graph, larger_than_1x1=False)) == BLOCKS
    adds = _bias_adds(passes_graph)
    assert len(adds) == MAP_BLOCKS
    rewritten, changed = rewrite_bias_adds(passes_graph)
    assert changed == dict.fromkeys(adds, "Add -> Conv")
    assert _bias_adds(rewritten) == []
    assert [n.name for n in rewritten.graph.node] == [n.name for n in passes_graph.graph.node]  # names kept
    assert _unused_initializers(rewritten) == _unused_initializers(passes_graph)  # the replaced constants are gone
    convs = {n.name: n for n in rewritten.graph.node if n.name in changed}
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in rewritten.graph.initializer}
    for conv in convs.values():
        assert conv.op_type == "Conv" and len(conv.input) == 3
        channels = weights[conv.input[1]].shape[0]
        assert onnx.helper.get_attribute_value(next(a for a in conv.attribute if a.name == "group")) == channels
        np.testing.assert_array_equal(weights[conv.input[1]], np.ones((channels, 1, 1, 1), np.float32))
    x = np.random.default_rng(0).standard_normal((3, *tiny.preprocessing.input_shape(1)[1:]), dtype=np.float32)
    np.testing.assert_allclose(graph_scores(rewritten, x), graph_scores(passes_graph, x), rtol=1e-5, atol=1e-5)


def test_rewrite_leaves_other_adds(passes_graph):
    """Adds of two maps (the residual, the gate sum) and per-channel adds on 1x1 maps stay Adds."""
    rewritten, changed = rewrite_bias_adds(passes_graph)
    adds = [n.name for n in passes_graph.graph.node if n.op_type == "Add"]
    assert len(adds) > BLOCKS
    assert [n.name for n in rewritten.graph.node if n.op_type == "Add"] == [a for a in adds if a not in changed]


def test_int8_session_runs_the_bias_as_a_quantized_conv(users_int8, passes_graph):
    report = users_int8.report.to_json()
    assert "bias adds as depthwise 1x1 convs" in report["target_description"]
    assert report["excluded"] == [] and report["session"]["float"] == []  # not kept in float as a grouped conv
    session = session_graph(users_int8.output)
    for name in _bias_adds(passes_graph):
        found = {n.op_type for n in session.graph.node if n.name == name or n.name.startswith(name + "_token_")}
        assert found == {"QLinearConv"}, (name, found)


def test_int8_parity_with_float(users_int8, users_config, biased, passes_graph, tiny, tmp_path, monkeypatch):
    """The INT8 graph is as close to the float graph as the same quantization without the rewrite (same calibration
    ranges): an int32 bias on a depthwise conv loses nothing against a uint8 bias in a QLinearAdd."""
    import calibration.quantize as quantize_module

    targets = dict(quantize_module.TARGETS, cpu=replace(quantize_module.TARGETS["cpu"], bias_convs=False))
    monkeypatch.setattr(quantize_module, "TARGETS", targets)
    plain = calibrate(biased, tmp_path / "plain.int8.onnx", users_config, graph_passes=run_passes)
    assert plain.report.to_json()["calibration"]["cache"]["hit"]  # the same ranges
    plain_session = session_graph(plain.output)
    assert {n.op_type for n in plain_session.graph.node if n.name in _bias_adds(passes_graph)} == {"QLinearAdd"}
    x = np.random.default_rng(2).standard_normal((8, *tiny.preprocessing.input_shape(1)[1:]), dtype=np.float32)
    fp32 = graph_scores(passes_graph, x)
    error = {name: np.linalg.norm(graph_scores(path, x) - fp32) / np.linalg.norm(fp32)
             for name, path in (("bias convs", users_int8.output), ("plain", plain.output))}
    assert error["bias convs"] <= error["plain"] * 1.05 + 1e-6, error
