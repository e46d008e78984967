"""FP16 conversion: float32 edges, reductions / gates kept in float32, parity with the fp32 graph."""

import onnx
import pytest
from test_onnx_export import cached_resnet18_aarm
from typer.testing import CliRunner

from export.cli import app
from export.fp16 import FP32_OPS, convert_onnx
from export.verify import compare_graphs
from runtime.artifact import file_sha256, read_sidecar
from runtime.errors import ArtifactError


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    _, _, exported = cached_resnet18_aarm(tmp_path_factory)
    out = tmp_path_factory.mktemp("fp16") / "model.fp16.onnx"
    convert_onnx(exported, out)
    return exported, out


def test_fp16_top1_agreement_at_least_99_percent(converted):
    exported, out = converted
    result = compare_graphs(exported, out, samples=200, batch=50, seed=7)
    assert result["top1_agreement"] >= 0.99, result
    # Measured 2.4e-4 on these 200 samples (logits up to 0.25; onnxruntime CPU on an AVX-512 host); the
    # bound is about twice that.
    assert result["max_abs_error"] < 5e-4, result


def test_fp16_graph_keeps_float32_io_and_fp32_ops(converted):
    _, out = converted
    model = onnx.shape_inference.infer_shapes(onnx.load(str(out)))
    f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert all(v.type.tensor_type.elem_type == f32 for v in [*model.graph.input, *model.graph.output])
    types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.value_info, *model.graph.input]}
    types.update({i.name: i.data_type for i in model.graph.initializer})
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert convs and all(types[n.input[1]] == f16 for n in convs)
    kept = [n for n in model.graph.node if n.op_type in FP32_OPS]
    assert {"Sigmoid", "ReduceMax", "ReduceMean"} <= {n.op_type for n in kept}
    assert all(types[n.input[0]] == f32 for n in kept)


def test_fp16_sidecar_and_refusals(converted, tmp_path):
    exported, out = converted
    sidecar = read_sidecar(out)
    assert (sidecar.stage, sidecar.precision, sidecar.parent_sha256) == ("convert", "fp16", file_sha256(exported))
    assert sidecar.inputs == read_sidecar(exported).inputs
    with pytest.raises(ArtifactError, match="fp32"):
        convert_onnx(out, tmp_path / "again.onnx")
    with pytest.raises(ArtifactError, match="precision"):
        convert_onnx(exported, tmp_path / "int8.onnx", precision="int8")


def test_convert_command_reports_parity(converted, tmp_path):
    exported, _ = converted
    out = tmp_path / "cli.fp16.onnx"
    result = CliRunner().invoke(app, ["convert", str(exported), "--precision", "fp16", "-o", str(out),
                                      "--verify-samples", "8"])
    assert result.exit_code == 0, result.output
    assert "top-1 agreement" in result.output and read_sidecar(out).precision == "fp16"
