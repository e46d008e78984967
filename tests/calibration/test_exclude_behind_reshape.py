"""A node kept in float on request stays float in onnxruntime's session even where the INT8 graph feeds it a
dequantized tensor through a Reshape: onnxruntime moves the DequantizeLinear past the Reshape and then
quantizes the float Gemm's weights itself (its WeightBiasQuantization), so `calibrate --exclude backbone.fc`
on the exported graph with the graph passes on (the CLI's default) used to stop with "1 node(s) kept in float
run quantized in onnxruntime's optimised session (node_linear)"."""

import json

import numpy as np
import onnx
from cli_runner import run_cli
from onnx import TensorProto, helper, numpy_helper

from calibration.sensitivity import dequantized_readers, float_variant


def _dq_reshape_gemm() -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """(INT8, float) graphs of x (1, 4, 1, 1) -> Reshape -> Gemm "fc": in the INT8 one x is quantized and
    dequantized before the Reshape, the Gemm excluded (float weights)."""
    w = numpy_helper.from_array(np.ones((3, 4), "float32"), "w")
    shape = numpy_helper.from_array(np.array([1, 4], "int64"), "shape")
    scale = numpy_helper.from_array(np.array(0.1, "float32"), "s")
    zero = numpy_helper.from_array(np.array(0, "uint8"), "z")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 1, 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    flat = [helper.make_node("Reshape", ["x", "shape"], ["v"], name="reshape"),
            helper.make_node("Gemm", ["v", "w"], ["y"], name="fc", transB=1)]
    opset = [helper.make_opsetid("", 17)]
    fmodel = helper.make_model(helper.make_graph(flat, "f", [x], [y], [w, shape]), opset_imports=opset, ir_version=8)
    quant = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q"),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dq"),
             helper.make_node("Reshape", ["xd", "shape"], ["v"], name="reshape"),
             helper.make_node("Gemm", ["v", "w"], ["y"], name="fc", transB=1)]
    qmodel = helper.make_model(helper.make_graph(quant, "q", [x], [y], [w, shape, scale, zero]), opset_imports=opset,
                               ir_version=8)
    return qmodel, fmodel


def test_an_excluded_node_behind_a_reshape_of_a_dequantized_tensor_reads_float():
    qmodel, fmodel = _dq_reshape_gemm()
    assert dequantized_readers(qmodel, {"fc"}) == {"fc"}  # through the Reshape
    fixed = float_variant(qmodel, fmodel, {"fc"})
    onnx.checker.check_model(fixed, full_check=True)
    assert dequantized_readers(fixed, {"fc"}) == set()
    ops = [n.op_type for n in fixed.graph.node]
    assert "DequantizeLinear" not in ops and ops.count("Reshape") == 1  # the dequantized path is gone


def test_calibrate_keeps_the_classifier_in_float_with_the_graph_passes(tiny, videos, tmp_path, capsys, monkeypatch):
    out = tmp_path / "model.int8.onnx"
    code, stdout, err = run_cli(["calibrate", tiny.onnx, "--data", videos, "--clips", "3", "--method", "minmax",
                                 "--exclude", "backbone.fc", "--target", "cpu", "-o", out], capsys, monkeypatch)
    assert code == 0, err
    report = json.loads(out.with_name("model.int8.calibration.json").read_text())
    requested = [e for e in report["excluded"] if e["reason"].startswith("requested")]
    assert requested and {e["in_session"] for e in requested} == {"float"}, requested
    assert report["quantization"]["graph_passes"]  # the CLI's default path: the passes ran


def test_a_float_node_the_session_quantizes_is_refused(tmp_path):
    """The check behind "kept in float": in a graph where the excluded Gemm still reads DQ -> Reshape and feeds a
    QuantizeLinear (what calibrate used to write), onnxruntime's session runs it quantized, and calibrate's
    session check refuses it, naming the node and what to do in the library's words (the CLI shows flags)."""
    import pytest

    from calibration.quantize import _check_session
    from calibration.report import KeptInFloat
    from export.help_format import flag_words
    from runtime.errors import ArtifactError

    qmodel, _ = _dq_reshape_gemm()
    graph = qmodel.graph
    graph.output[0].name = "yd"
    graph.node.extend([helper.make_node("QuantizeLinear", ["y", "s", "z"], ["yq"], name="q_out"),
                       helper.make_node("DequantizeLinear", ["yq", "s", "z"], ["yd"], name="dq_out")])
    path = tmp_path / "q.onnx"
    onnx.save(qmodel, str(path))
    kept = [KeptInFloat(node="fc", group=None, reason="requested")]
    with pytest.raises(ArtifactError, match=r"1 node\(s\) kept in float run quantized .*\(fc\)") as err:
        _check_session(path, qmodel, kept, target="cpu", threads=1)
    assert kept[0].in_session == "int8"
    flags = {"passes": "--passes"}
    assert flag_words(str(err.value), flags).endswith("(aarm-export optimize, or calibrate with --passes)")
