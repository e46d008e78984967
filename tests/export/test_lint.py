"""TensorRT-compatibility lint: every rule fires on a crafted bad graph and stays quiet on a good one."""

import json
import shutil

import numpy as np
import onnx
import pytest
from cli_runner import run_cli
from onnx import TensorProto, helper, numpy_helper
from test_onnx_export import cached_resnet18_aarm
from typer.testing import CliRunner

from aarm.data.synthetic import make_synthetic
from export.cli import app
from export.lint import RULES, SUPPORTED_OPS, UNSUPPORTED_OPS, Finding, lint_onnx

F = TensorProto.FLOAT


def _model(nodes, inputs, outputs, initializers=(), opset=17, domains=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    imports = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, 1) for d in domains)]
    return helper.make_model(graph, opset_imports=imports)


def _vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def _relu_model(**kw):
    return _model(
        [helper.make_node("Relu", ["x"], ["y"], name="relu")],
        [_vi("x", F, ["N", 3, 8, 8])],
        [_vi("y", F, ["N", 3, 8, 8])],
        **kw,
    )


def _rules(findings, severity=None):
    return {f.rule for f in findings if severity is None or f.severity == severity}


def _const(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def test_operator_table_follows_parser_matrix():
    assert not set(SUPPORTED_OPS) & UNSUPPORTED_OPS
    assert {"Conv", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "Sigmoid", "Gemm"} <= set(
        SUPPORTED_OPS
    )
    assert {"Unique", "QLinearConv", "Bernoulli", "SequenceAt"} <= UNSUPPORTED_OPS
    assert SUPPORTED_OPS["Conv"] == {"FP32", "FP16", "BF16"}
    assert "INT64" in SUPPORTED_OPS["Gather"]


def test_good_graph_is_clean():
    assert lint_onnx(_relu_model()) == []


def test_opset_out_of_range():
    assert _rules(lint_onnx(_relu_model(opset=8)), "error") == {"opset"}
    assert _rules(lint_onnx(_relu_model(opset=24))) == set()


def test_unsupported_and_custom_ops():
    m = _model(
        [helper.make_node("Unique", ["x"], ["y"], name="uniq")],
        [_vi("x", F, ["N", 4])],
        [_vi("y", F, [None])],
    )
    errors = [f for f in lint_onnx(m) if f.rule == "unsupported-op"]
    assert [(f.node, f.op, f.severity) for f in errors] == [("uniq", "Unique", "error")]
    custom = _model(
        [helper.make_node("FusedAarm", ["x"], ["y"], name="fused", domain="com.aarm")],
        [_vi("x", F, ["N", 4])],
        [_vi("y", F, ["N", 4])],
        domains=["com.aarm"],
    )
    (finding,) = [f for f in lint_onnx(custom) if f.rule == "unsupported-op"]
    assert finding.op == "com.aarm::FusedAarm" and "plugin" in finding.message


def test_random_ops_are_errors_reported_once():
    m = _model(
        [
            helper.make_node("RandomUniformLike", ["x"], ["r"], name="rand"),
            helper.make_node("Bernoulli", ["r"], ["b"], name="bern"),
            helper.make_node("Add", ["x", "b"], ["y"], name="add"),
        ],
        [_vi("x", F, ["N", 4])],
        [_vi("y", F, ["N", 4])],
    )
    findings = lint_onnx(m)
    assert sorted((f.rule, f.node) for f in findings if f.severity == "error") == [
        ("random-op", "bern"),
        ("random-op", "rand"),
    ]


def test_data_types():
    double = _model(
        [helper.make_node("Cast", ["x"], ["y"], to=F, name="cast")],
        [_vi("x", TensorProto.DOUBLE, ["N", 4])],
        [_vi("y", F, ["N", 4])],
    )
    (finding,) = lint_onnx(double)
    assert (finding.rule, finding.severity, finding.node) == ("dtype", "warning", "graph input x")
    string = _model(
        [helper.make_node("Identity", ["x"], ["y"], name="id")],
        [_vi("x", TensorProto.STRING, ["N"])],
        [_vi("y", TensorProto.STRING, ["N"])],
    )
    assert {(f.rule, f.severity) for f in lint_onnx(string)} == {("dtype", "error")}
    uint16 = _model(
        [helper.make_node("Identity", ["x"], ["y"], name="id")],
        [_vi("x", TensorProto.UINT16, ["N"])],
        [_vi("y", TensorProto.UINT16, ["N"])],
    )
    assert "dtype" in _rules(lint_onnx(uint16), "error")


def test_uint8_only_at_the_boundary():
    inside = _model(
        [
            helper.make_node("Cast", ["x"], ["u"], to=TensorProto.UINT8, name="to_u8"),
            helper.make_node("Max", ["u", "u"], ["m"], name="max_u8"),
            helper.make_node("Cast", ["m"], ["y"], to=F, name="to_f"),
        ],
        [_vi("x", F, ["N", 4])],
        [_vi("y", F, ["N", 4])],
    )
    assert ("dtype", "to_u8") in {(f.rule, f.node) for f in lint_onnx(inside) if f.severity == "error"}
    boundary = _model(
        [helper.make_node("Cast", ["x"], ["y"], to=F, name="cast")],
        [_vi("x", TensorProto.UINT8, ["N", 3, 8, 8])],
        [_vi("y", F, ["N", 3, 8, 8])],
    )
    assert lint_onnx(boundary) == []


def test_op_input_types():
    bad = _model(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        [_vi("x", TensorProto.INT32, ["N", 4])],
        [_vi("y", TensorProto.INT32, ["N", 2])],
        [_const("w", np.ones((4, 2), np.int32))],
    )
    (finding,) = lint_onnx(bad)
    assert (finding.rule, finding.node, finding.severity) == ("op-dtype", "mm", "error")
    relu_int8 = _model(
        [helper.make_node("Relu", ["x"], ["y"], name="r")],
        [_vi("x", TensorProto.INT8, ["N", 4])],
        [_vi("y", TensorProto.INT8, ["N", 4])],
    )
    assert "op-dtype" in _rules(lint_onnx(relu_int8), "error")
    # int64 on a shape path (Shape -> Gather -> Add) is fine
    shape_path = _model(
        [
            helper.make_node("Shape", ["x"], ["s"], name="shape"),
            helper.make_node("Add", ["s", "one"], ["y"], name="add"),
        ],
        [_vi("x", F, ["N", 4])],
        [_vi("y", TensorProto.INT64, [2])],
        [_const("one", np.ones(2, np.int64))],
    )
    assert lint_onnx(shape_path) == []


def test_dynamic_dims_other_than_batch():
    m = _model(
        [helper.make_node("Relu", ["x"], ["y"], name="relu")],
        [_vi("x", F, ["N", "C", 8, 8])],
        [_vi("y", F, ["N", "C", 8, 8])],
    )
    errors = [f for f in lint_onnx(m) if f.severity == "error"]
    assert [(f.rule, f.node) for f in errors] == [("dynamic-shape", "graph input x")]
    assert "axis 1" in errors[0].message


def test_topk_argmax_axis_outside_last_four():
    def argmax(axis):
        return _model(
            [helper.make_node("ArgMax", ["x"], ["y"], axis=axis, keepdims=1, name="am")],
            [_vi("x", F, ["N", 3, 4, 5, 6])],
            [_vi("y", TensorProto.INT64, None)],
        )

    (finding,) = lint_onnx(argmax(0))
    assert (finding.rule, finding.node, finding.severity) == ("topk-axis", "am", "error")
    assert lint_onnx(argmax(1)) == [] and lint_onnx(argmax(-1)) == []
    topk = _model(
        [helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=-1, sorted=0, name="tk")],
        [_vi("x", F, ["N", 5000])],
        [_vi("v", F, None), _vi("i", TensorProto.INT64, None)],
        [_const("k", np.array([4000], np.int64))],
    )
    messages = [f.message for f in lint_onnx(topk) if f.rule == "topk"]
    assert (
        len(messages) == 2 and any("sorted=0" in m for m in messages) and any("3840" in m for m in messages)
    )


def test_op_restrictions():
    pool1d = _model(
        [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2], name="pool")],
        [_vi("x", F, ["N", 3, 8])],
        [_vi("y", F, None)],
    )
    assert [(f.rule, f.node) for f in lint_onnx(pool1d)] == [("op-restriction", "pool")]
    cubic = _model(
        [helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="cubic", name="rs")],
        [_vi("x", F, ["N", 3, 8, 8])],
        [_vi("y", F, None)],
        [_const("scales", np.array([1, 1, 2, 2], np.float32))],
    )
    assert [(f.rule, f.node) for f in lint_onnx(cubic)] == [("op-restriction", "rs")]
    linear = _model(
        [helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="linear", name="rs")],
        [_vi("x", F, ["N", 3, 8, 8])],
        [_vi("y", F, None)],
        [_const("scales", np.array([1, 1, 2, 2], np.float32))],
    )
    assert lint_onnx(linear) == []


def _qdq_conv(*, act_zp=np.int8(0), w_axis=0, act_scale=np.float32(0.1), q_consumer="DequantizeLinear"):
    """x -> Q -> DQ -> Conv(DQ(w int8 per-channel)) -> y."""
    w = np.ones((4, 3, 3, 3), np.int8)
    w_scale = np.full(w.shape[w_axis], 0.02, np.float32)
    inits = [
        _const("xs", act_scale),
        _const("xz", act_zp),
        _const("w", w),
        _const("ws", w_scale),
        _const("wz", np.zeros(w.shape[w_axis], np.int8)),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="q_x"),
        helper.make_node(
            q_consumer,
            ["xq", "xs", "xz"] if q_consumer == "DequantizeLinear" else ["xq"],
            ["xd"],
            name="dq_x",
        ),
        helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], axis=w_axis, name="dq_w"),
        helper.make_node("Conv", ["xd", "wd"], ["y"], name="conv"),
    ]
    return _model(nodes, [_vi("x", F, ["N", 3, 8, 8])], [_vi("y", F, None)], inits)


def test_qdq_rules():
    assert lint_onnx(_qdq_conv()) == []
    uint8 = [f for f in lint_onnx(_qdq_conv(act_zp=np.uint8(128))) if f.rule == "qdq"]
    assert {f.node for f in uint8} == {"q_x", "dq_x"} and all("uint8" in f.message for f in uint8)
    nonzero = [f for f in lint_onnx(_qdq_conv(act_zp=np.int8(3))) if f.rule == "qdq"]
    assert {f.node for f in nonzero} == {"q_x", "dq_x"} and all("zero point" in f.message for f in nonzero)
    axis = [f for f in lint_onnx(_qdq_conv(w_axis=1)) if f.rule == "qdq"]
    assert [(f.node, f.severity) for f in axis] == [("dq_w", "error")] and "axis 0" in axis[0].message
    per_channel_act = [
        f for f in lint_onnx(_qdq_conv(act_scale=np.full(3, 0.1, np.float32))) if f.rule == "qdq"
    ]
    assert per_channel_act and all("activation" in f.message for f in per_channel_act)
    q_to_relu = [f for f in lint_onnx(_qdq_conv(q_consumer="Relu")) if f.rule == "qdq"]
    assert [f.node for f in q_to_relu] == ["q_x"]


def test_shape_inference_failure_is_reported():
    m = _model(
        [helper.make_node("Add", ["x", "z"], ["y"], name="add")],
        [_vi("x", F, ["N", 3]), _vi("z", F, ["N", 4])],
        [_vi("y", F, None)],
    )
    findings = lint_onnx(m)
    assert [f.rule for f in findings] == ["shape-inference"]


@pytest.fixture(scope="module")
def aarm_onnx(tmp_path_factory):
    """The AARM-ResNet-18 graph (TSN, K = 2, 64x64, dynamic batch) that `aarm-export export` writes from a
    checkpoint, exported once per session and shared with test_onnx_export, test_fp16 and test_passes."""
    _, _, path = cached_resnet18_aarm(tmp_path_factory)
    return path


def test_exported_aarm_graph_lints_clean(aarm_onnx):
    assert lint_onnx(aarm_onnx) == []
    ops = {n.op_type for n in onnx.load(str(aarm_onnx)).graph.node}
    assert {"ReduceMax", "ReduceMean", "Sigmoid", "Conv"} <= ops  # the AARM pieces were linted


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """A folder of unlabelled videos (synthetic, 64x64) to calibrate on: the model's classes are not theirs."""
    source, flat = tmp_path_factory.mktemp("synthetic") / "data", tmp_path_factory.mktemp("clips")
    make_synthetic(source, classes=2, videos_per_class=2, frames=8, size=64, seed=0)
    for video in sorted((source / "videos").rglob("*.*")):
        shutil.copy(video, flat / video.name)
    return flat


@pytest.mark.parametrize("target", ["tensorrt", "cpu"])
def test_calibrated_aarm_graph(aarm_onnx, clips, target, tmp_path, capsys, monkeypatch):
    """`aarm-export calibrate --target tensorrt` (symmetric int8 Q/DQ, TensorRT's explicit quantization) lints
    clean; `--target cpu` (uint8 activations, for onnxruntime's CPU kernels) is what TensorRT refuses."""
    out = tmp_path / f"{target}.int8.onnx"
    code, _, err = run_cli(["calibrate", aarm_onnx, "--data", clips, "-o", out, "--target", target, "--clips", "4",
                            "--method", "minmax"], capsys, monkeypatch)
    assert code == 0, err
    assert sum(n.op_type == "QuantizeLinear" for n in onnx.load(str(out)).graph.node) > 20  # an int8 graph
    errors = [f for f in lint_onnx(out) if f.severity == "error"]
    if target == "tensorrt":
        assert errors == []
    else:
        assert errors and {f.rule for f in errors} == {"qdq"} and all("uint8" in f.message for f in errors)


def test_cli_lint_exit_codes_and_json(tmp_path):
    good, bad = tmp_path / "good.onnx", tmp_path / "bad.onnx"
    onnx.save(_relu_model(), str(good))
    onnx.save(_qdq_conv(act_zp=np.int8(5)), str(bad))
    runner = CliRunner()
    result = runner.invoke(app, ["lint", str(good)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["lint", str(bad), "--json", str(tmp_path / "lint.json")])
    assert result.exit_code == 1
    report = json.loads((tmp_path / "lint.json").read_text())
    assert report["errors"] == 2 and {f["node"] for f in report["findings"]} == {"q_x", "dq_x"}


def test_rules_registry_and_finding_dict():
    assert set(RULES) >= {"opset", "unsupported-op", "random-op", "dtype", "dynamic-shape", "topk", "qdq"}
    f = Finding("opset", "error", "(model)", "-", "m", "f")
    assert f.to_dict()["severity"] == "error"
