"""The cpu target's AARM pools on the uint8 map (calibration.uint8_pools): exact float rewrites, and an INT8 graph
whose optimised onnxruntime session pools the quantized map instead of dequantizing it once per pool."""

from dataclasses import replace

import numpy as np
import onnx
import pytest

from calibration.quantize import calibrate, session_graph
from calibration.sensitivity import graph_scores
from calibration.uint8_pools import rewrite_pools
from export.passes import run_passes

# Session kernels that pool uint8 codes (NhwcMaxPool: onnxruntime's channels-last uint8 max pool).
UINT8_POOLS = {"MaxPool", "NhwcMaxPool", "ReduceMax", "QLinearConv"}


@pytest.fixture(scope="module")
def passes_graph(tiny) -> onnx.ModelProto:
    """The tiny AARM graph after the standard-op passes (what `aarm-export calibrate` quantizes)."""
    return run_passes(onnx.load(str(tiny.onnx)))[0]


@pytest.fixture(scope="module")
def users_int8(tiny, users_config, tmp_path_factory):
    """The users' path: calibrate on the exported graph with the standard-op passes first, cpu target."""
    out = tmp_path_factory.mktemp("uint8_pools") / "model.int8.onnx"
    return calibrate(tiny.onnx, out, users_config, graph_passes=run_passes)


def test_rewrites_are_exact_in_float(passes_graph, tiny):
    rewritten, changed = rewrite_pools(passes_graph)
    ops = sorted(set(changed.values()))
    assert ops == ["GlobalMaxPool -> MaxPool", "ReduceMean -> Conv"]
    assert sum(v == "GlobalMaxPool -> MaxPool" for v in changed.values()) == 8  # one per AARM block (CAM)
    assert sum(v == "ReduceMean -> Conv" for v in changed.values()) == 8  # STAM's channel mean
    assert not [n for n in rewritten.graph.node if n.op_type == "GlobalMaxPool"]
    assert [n.name for n in rewritten.graph.node] == [n.name for n in passes_graph.graph.node]  # names kept
    x = np.random.default_rng(0).standard_normal((3, *tiny.preprocessing.input_shape(1)[1:]), dtype=np.float32)
    np.testing.assert_allclose(graph_scores(rewritten, x), graph_scores(passes_graph, x), rtol=1e-5, atol=1e-5)


def test_int8_session_pools_the_uint8_map(users_int8, passes_graph):
    report = users_int8.report.to_json()
    assert "pools on the uint8 map" in report["target_description"]
    session = session_graph(users_int8.output)
    producer = {o: n for n in session.graph.node for o in n.output}
    pools = {n.name for n in passes_graph.graph.node if n.op_type in ("GlobalMaxPool", "ReduceMax")}
    pools |= {name for name, change in rewrite_pools(passes_graph)[1].items() if change == "ReduceMean -> Conv"}
    assert len(pools) == 3 * 8  # per AARM block: CAM's spatial max, STAM's channel max and mean
    kernels = {name: [n for n in session.graph.node if n.name == name or n.name.startswith(name + "_token_")]
               for name in pools}
    for name, found in kernels.items():
        assert [n.op_type for n in found] and {n.op_type for n in found} <= UINT8_POOLS, (name, found)
        for n in found:  # it reads the quantized map, not a DequantizeLinear's float copy of it
            source = producer.get(n.input[0])
            while source is not None and source.op_type == "Transpose":
                source = producer.get(source.input[0])
            assert source is not None and source.op_type != "DequantizeLinear", name
    assert "GlobalMaxPool" not in report["session"]["ops"]


def test_int8_session_keeps_the_block_channels_last(users_int8, passes_graph):
    """STAM's one-channel convs are quantized, so no float conv makes onnxruntime convert each block's map out of its
    channels-last int8 layout and back (a Transpose pair over the full map per block)."""
    report = users_int8.report.to_json()
    assert report["excluded"] == [] and report["session"]["float"] == []
    weights = {t.name: list(t.dims) for t in passes_graph.graph.initializer}
    stam = [n.name for n in passes_graph.graph.node if n.op_type == "Conv" and weights[n.input[1]][1] == 1]
    assert len(stam) == 3 * 8  # three per AARM block
    session = session_graph(users_int8.output)
    for name in stam:
        assert {n.op_type for n in session.graph.node if n.name.startswith(name + "_token_")} == {"QLinearConv"}, name
    ops = report["session"]["ops"]
    assert "Conv" not in ops and "ReorderOutput" not in ops  # no float (NCHWc) convolution left
    assert ops.get("Transpose", 0) < 8  # the input's and a few [N, C, 1, 1] ones, not two per block


def test_int8_parity_with_float(users_int8, users_config, passes_graph, tiny, tmp_path, monkeypatch):
    """The INT8 graph is as close to the float graph as the same quantization without the pool rewrites (same
    calibration ranges): pooling uint8 codes loses nothing."""
    import calibration.quantize as quantize_module

    targets = dict(quantize_module.TARGETS, cpu=replace(quantize_module.TARGETS["cpu"], uint8_pools=False))
    monkeypatch.setattr(quantize_module, "TARGETS", targets)
    plain = calibrate(tiny.onnx, tmp_path / "plain.int8.onnx", users_config, graph_passes=run_passes)
    assert plain.report.to_json()["calibration"]["cache"]["hit"]  # the same ranges
    assert "GlobalMaxPool" in plain.report.to_json()["session"]["ops"]  # pooled in float
    x = np.random.default_rng(2).standard_normal((8, *tiny.preprocessing.input_shape(1)[1:]), dtype=np.float32)
    fp32 = graph_scores(passes_graph, x)
    error = {name: np.linalg.norm(graph_scores(path, x) - fp32) / np.linalg.norm(fp32)
             for name, path in (("uint8 pools", users_int8.output), ("plain", plain.output))}
    assert error["uint8 pools"] <= error["plain"] * 1.05 + 1e-6, error
