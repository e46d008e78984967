"""Graph passes: each on a small graph (parity on onnxruntime CPU), then all of them on an exported model."""

from unittest import mock

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from test_onnx_export import SAMPLES, cached_resnet18_aarm
from typer.testing import CliRunner

from aarm.attention import AARMBlock, ParallelFusion
from export.cli import app
from export.passes import (
    find_channel_fusions,
    fold_constants,
    global_pools,
    optimize_onnx,
    remove_noops,
    rewrite_channel_fusion,
    run_passes,
)
from export.verify import compare_graphs
from runtime.artifact import file_sha256, read_sidecar
from runtime.errors import ArtifactError


def ort_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def apply(model: onnx.ModelProto, *passes) -> onnx.ModelProto:
    out, _ = run_passes(model, passes)
    return out


def ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def make(nodes, inits, shape=(2, 4, 3, 3), out_shape=None) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def export_module(module: torch.nn.Module, *inputs: torch.Tensor) -> onnx.ModelProto:
    names = [f"in{i}" for i in range(len(inputs))]
    batch = torch.export.Dim("N", min=1, max=64)
    program = torch.onnx.export(module.eval(), inputs, None, dynamo=True, opset_version=18, input_names=names,
                                output_names=["y"], dynamic_shapes=tuple({0: batch} for _ in inputs),
                                external_data=False)
    return program.model_proto


def legacy_forward(self: AARMBlock, x: torch.Tensor) -> torch.Tensor:
    """AARM's fusion as graphs exported before it became weighted sums: an interleaving stack, a grouped conv."""
    m_ch, m_st = self.cam(x) * x, self.stam(x) * x
    return self.fuse.conv(torch.stack((m_ch, m_st), dim=2).flatten(1, 2))


def randomized_block(channels: int, dims: int) -> AARMBlock:
    torch.manual_seed(dims)
    block = AARMBlock(channels, dims=dims, reduction=4)
    with torch.no_grad():
        block.fuse.conv.weight.copy_(1 + 0.5 * torch.randn_like(block.fuse.conv.weight))
        block.fuse.conv.bias.copy_(0.2 * torch.randn_like(block.fuse.conv.bias))
    return block.eval()


# ------------------------------------------------------------------------------------------- single passes


def test_fold_constants_folds_constant_subgraphs():
    model = make(
        [helper.make_node("Mul", ["a", "b"], ["ab"]), helper.make_node("Add", ["x", "ab"], ["y"])],
        {"a": np.full((1, 4, 1, 1), 2.0, np.float32), "b": np.full((1, 4, 1, 1), 3.0, np.float32)},
    )
    folded = apply(model, fold_constants)
    assert ops(folded) == ["Add"]
    x = rand(2, 4, 3, 3)
    np.testing.assert_allclose(ort_run(folded, {"x": x})[0], x + 6.0, rtol=0, atol=1e-6)


def test_remove_noops_bypasses_every_kind_of_noop():
    model = make([
        helper.make_node("Identity", ["x"], ["i"]),
        helper.make_node("Mul", ["i", "one"], ["m"]),
        helper.make_node("Add", ["zero", "m"], ["a"]),
        helper.make_node("Div", ["a", "one"], ["d"]),
        helper.make_node("Sub", ["d", "zero"], ["s"]),
        helper.make_node("Reshape", ["s", "shape"], ["r"]),
        helper.make_node("Cast", ["r"], ["c"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["c"], ["t"], perm=[0, 1, 2, 3]),
        helper.make_node("Dropout", ["t"], ["o"]),
        helper.make_node("Relu", ["o"], ["y"]),
    ], {"one": np.ones((4, 1, 1), np.float32), "zero": np.zeros((), np.float32),
        "shape": np.array([2, 4, 3, 3], np.int64)})
    cleaned = apply(model, remove_noops)
    assert ops(cleaned) == ["Relu"]
    x = rand(2, 4, 3, 3)
    np.testing.assert_array_equal(ort_run(cleaned, {"x": x})[0], np.maximum(x, 0))


def test_remove_noops_keeps_ops_that_change_shape_or_values():
    model = make([
        helper.make_node("Mul", ["x", "ones"], ["m"]),  # (2, 1, 3, 3) * (1, 4, 1, 1): broadcasts to 4 channels
        helper.make_node("Add", ["m", "half"], ["a"]),
        helper.make_node("Reshape", ["a", "shape"], ["y"]),
    ], {"ones": np.ones((1, 4, 1, 1), np.float32), "half": np.full((), 0.5, np.float32),
        "shape": np.array([2, 36], np.int64)}, shape=(2, 1, 3, 3))
    assert ops(apply(model, remove_noops)) == ["Mul", "Add", "Reshape"]


def test_remove_noops_keeps_the_graph_output_name():
    model = make([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Identity", ["r"], ["y"])], {})
    cleaned = apply(model, remove_noops)
    assert ops(cleaned) == ["Relu"] and cleaned.graph.output[0].name == "y"


def test_global_pools_rewrites_spatial_reductions_only():
    model = make([
        helper.make_node("ReduceMean", ["x"], ["avg"], axes=[2, 3], keepdims=1),
        helper.make_node("ReduceMax", ["x"], ["mx"], axes=[-1, -2], keepdims=1),
        helper.make_node("ReduceMean", ["x"], ["cm"], axes=[1], keepdims=1),
        helper.make_node("Add", ["avg", "mx"], ["g"]),
        helper.make_node("Mul", ["g", "cm"], ["y"]),
    ], {})
    pooled = apply(model, global_pools)
    assert sorted(ops(pooled)) == sorted(["GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "Add", "Mul"])
    x = rand(2, 4, 3, 3)
    want = (x.mean((2, 3), keepdims=True) + x.max((2, 3), keepdims=True)) * x.mean(1, keepdims=True)
    np.testing.assert_allclose(ort_run(pooled, {"x": x})[0], want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("dims", [2, 3])
def test_channel_fusion_becomes_m_times_weighted_gates_plus_bias(dims):
    block = randomized_block(16, dims)
    x = torch.randn(2, 16, *([4] * (dims - 2)), 6, 6)
    with mock.patch.object(AARMBlock, "forward", legacy_forward):
        model = export_module(block, x)
    graph = gs.import_onnx(onnx.shape_inference.infer_shapes(model))
    assert len(find_channel_fusions(graph)) == 1
    rewritten = apply(model, rewrite_channel_fusion, global_pools)
    assert "Concat" not in ops(rewritten)
    groups = [a.i for n in rewritten.graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "group"]
    assert all(g == 1 for g in groups)
    inferred = onnx.shape_inference.infer_shapes(rewritten)
    channel_dims = [v.type.tensor_type.shape.dim[1].dim_value for v in inferred.graph.value_info
                    if len(v.type.tensor_type.shape.dim) > 1]
    assert 32 not in channel_dims, "a 2C-channel tensor is left"
    xb = rand(3, *x.shape[1:], seed=1)
    with torch.no_grad():
        want = block(torch.from_numpy(xb)).numpy()
    np.testing.assert_allclose(ort_run(rewritten, {"in0": xb})[0], want, rtol=0, atol=1e-5)


def test_channel_fusion_of_two_unrelated_maps_is_a_weighted_sum():
    torch.manual_seed(0)
    fusion = ParallelFusion(8)
    with torch.no_grad():
        fusion.conv.weight.normal_()
        fusion.conv.bias.normal_()
    a, b = torch.randn(2, 8, 5, 5), torch.randn(2, 8, 5, 5)
    rewritten = apply(export_module(fusion, a, b), rewrite_channel_fusion)
    assert "Concat" not in ops(rewritten) and "Conv" not in ops(rewritten)
    with torch.no_grad():
        want = fusion(a, b).numpy()
    np.testing.assert_allclose(ort_run(rewritten, {"in0": a.numpy(), "in1": b.numpy()})[0], want, rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------------- whole graphs


@pytest.fixture(scope="module")
def optimized(tmp_path_factory):
    _, _, exported = cached_resnet18_aarm(tmp_path_factory)
    out = exported.with_name("model.opt.onnx")
    if not out.exists():
        result = CliRunner().invoke(app, ["optimize", str(exported), "-o", str(out), "--verify-samples", "4"])
        assert result.exit_code == 0, result.output
        assert "rewrite_channel_fusion" in result.output and "top-1 agreement" in result.output
    return exported, out


def test_optimized_model_matches_exported_in_fp32(optimized):
    exported, out = optimized
    result = compare_graphs(exported, out, samples=SAMPLES, batch=16)
    assert result["max_abs_error"] <= 1e-5 and result["top1_agreement"] == 1.0, result


def test_optimized_model_has_no_interleaved_fusion_and_uses_global_pools(optimized):
    exported, out = optimized
    before, after = onnx.load(str(exported)), onnx.load(str(out))

    def data_concats(m: onnx.ModelProto) -> list[str]:  # the dynamic K's Reshape target [-1, K, classes] aside
        shapes = {n.input[1] for n in m.graph.node if n.op_type == "Reshape"}
        return [n.name for n in m.graph.node if n.op_type == "Concat" and n.output[0] not in shapes]

    assert not data_concats(before) and not data_concats(after)  # the fusion exports as weighted sums
    assert ops(after).count("GlobalAveragePool") >= 8 and ops(after).count("GlobalMaxPool") == 8
    # the fusion now exports as weighted sums, so the passes only swap reductions for global pools: 239 -> 239 nodes
    assert len(after.graph.node) <= len(before.graph.node)
    assert after.metadata_props == before.metadata_props
    assert [i.name for i in after.graph.input] == ["input"] and [o.name for o in after.graph.output] == ["scores"]


def test_optimized_model_carries_the_inferred_shapes(optimized):
    """Every intermediate tensor of the optimised graph has its (symbolic) shape recorded, as the exporter's
    graph has: onnxruntime ran the same ResNet-50 convolutions 10 % slower in a graph without them."""
    exported, out = optimized
    model = onnx.load(str(out))
    shaped = {v.name for v in model.graph.value_info}
    outputs = {o.name for o in model.graph.output}
    missing = [t for n in model.graph.node for t in n.output if t and t not in shaped and t not in outputs]
    assert not missing, missing[:5]
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.value_info}
    assert all(isinstance(shape[0], str) for name, shape in dims.items() if len(shape) == 4)  # N*K: symbolic


def test_optimize_writes_a_derived_sidecar(optimized):
    exported, out = optimized
    sidecar = read_sidecar(out)
    assert (sidecar.stage, sidecar.precision, sidecar.parent) == ("optimize", "fp32", str(exported))
    assert sidecar.parent_sha256 == file_sha256(exported)
    assert sidecar.classes == read_sidecar(exported).classes
    assert "rewrite_channel_fusion" in sidecar.extra["passes"]


def test_optimize_refuses_overwrite_and_non_fp32_input(optimized, tmp_path):
    exported, out = optimized
    with pytest.raises(Exception, match="exists; pass `force` to overwrite it"):
        optimize_onnx(exported, out)
    fake = tmp_path / "m.onnx"
    fake.write_bytes(exported.read_bytes())
    from runtime.artifact import write_sidecar

    write_sidecar(fake, read_sidecar(exported).derive(precision="fp16"))
    with pytest.raises(ArtifactError, match="fp32"):
        optimize_onnx(fake, tmp_path / "o.onnx")


# ------------------------------------------------------------------------------------------- fused kernels


@pytest.fixture(scope="module")
def kernel_library():
    from aarm.errors import BackendUnavailable
    from export.kernels import custom_op_library

    try:
        return custom_op_library()
    except BackendUnavailable as exc:  # no C++ compiler on this machine: the portable graph is the artifact
        pytest.skip(str(exc))


def run_with_kernels(model: onnx.ModelProto, library, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.register_custom_ops_library(str(library))
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(None, feeds)


@pytest.mark.parametrize("shape", [(3, 24, 7, 9), (2, 16, 3, 5, 4)])
def test_kernels_match_numpy(kernel_library, shape):
    from export.kernels import DOMAIN

    n, c, *spatial = shape
    x_, cg_, sg_, r_ = (rand(*s, seed=i) for i, s in enumerate([shape, (n, c, *[1] * len(spatial)),
                                                               (n, 1, *spatial), shape]))
    w1, w2, b = (rand(c, seed=10 + i) for i in range(3))
    graph = helper.make_graph(
        [helper.make_node("AarmPool", ["x"], ["gp", "cp"], domain=DOMAIN, global_avg=0.3, global_max=0.7,
                          channel_avg=0.6, channel_max=0.4),
         helper.make_node("AarmGate", ["x", "cg", "sg", "w1", "w2", "b", "r"], ["y"], domain=DOMAIN, relu=1),
         helper.make_node("AarmGate", ["x", "cg", "sg", "w1", "w2", "b"], ["y2"], domain=DOMAIN)],
        "k", [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v.shape))
              for k, v in (("x", x_), ("cg", cg_), ("sg", sg_), ("r", r_))],
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, None) for k in ("gp", "cp", "y", "y2")],
        initializer=[numpy_helper.from_array(v, k) for k, v in (("w1", w1), ("w2", w2), ("b", b))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)],
                              ir_version=10)
    gp, cp, y, y2 = run_with_kernels(model, kernel_library, {"x": x_, "cg": cg_, "sg": sg_, "r": r_})
    axes = tuple(range(2, len(shape)))
    per = (1, c, *[1] * len(spatial))
    gate = cg_ * w1.reshape(per) + sg_ * w2.reshape(per)
    np.testing.assert_allclose(gp, 0.3 * x_.mean(axes, keepdims=True) + 0.7 * x_.max(axes, keepdims=True), atol=1e-5)
    np.testing.assert_allclose(cp, 0.6 * x_.mean(1, keepdims=True) + 0.4 * x_.max(1, keepdims=True), atol=1e-5)
    np.testing.assert_allclose(y, np.maximum(x_ * gate + b.reshape(per) + r_, 0), atol=1e-5)
    np.testing.assert_allclose(y2, x_ * gate + b.reshape(per), atol=1e-5)


@pytest.mark.parametrize("dims", [2, 3])
def test_fuse_aarm_kernels_on_a_block(kernel_library, dims):
    from export.passes import KERNEL_PASSES

    block = randomized_block(16, dims)
    x = torch.randn(2, 16, *([4] * (dims - 2)), 6, 6)
    fused = apply(export_module(block, x), *KERNEL_PASSES)
    assert sorted(ops(fused).count(k) for k in ("AarmPool", "AarmGate")) == [1, 1]
    assert not {"GlobalAveragePool", "GlobalMaxPool", "ReduceMax", "Concat"} & set(ops(fused))
    xb = rand(3, *x.shape[1:], seed=2)
    with torch.no_grad():
        want = block(torch.from_numpy(xb)).numpy()
    np.testing.assert_allclose(run_with_kernels(fused, kernel_library, {"in0": xb})[0], want, rtol=0, atol=1e-5)


def test_optimize_with_kernels_fuses_every_block_with_its_residual(optimized, kernel_library, tmp_path):
    exported, _ = optimized
    out = tmp_path / "model.kernels.onnx"
    result = CliRunner().invoke(app, ["optimize", str(exported), "-o", str(out), "--kernels", "--verify-samples", "0"])
    assert result.exit_code == 0, result.output
    model = onnx.load(str(out))
    assert ops(model).count("AarmPool") == 8 and ops(model).count("AarmGate") == 8
    gates = [n for n in model.graph.node if n.op_type == "AarmGate"]
    assert all(len(n.input) == 7 for n in gates), "the residual addition is fused into every gate"
    assert all(a.i == 1 for n in gates for a in n.attribute if a.name == "relu")
    assert "Add" not in ops(model)
    sidecar = read_sidecar(out)
    assert sidecar.extra["custom_ops"]["library"] == str(kernel_library)
    parity = compare_graphs(exported, out, samples=SAMPLES, batch=16)
    assert parity["max_abs_error"] <= 1e-5 and parity["top1_agreement"] == 1.0, parity


def test_a_kernel_graph_is_told_by_its_nodes_not_by_a_domain_import(tmp_path):
    """onnxruntime's quantizer could import com.aarm into an INT8 graph with no AARM node in it: that graph needs
    no kernel library and may go to Triton; a graph with an AarmGate node does."""
    from export.verify import uses_custom_ops

    def save(nodes: list, name: str):
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                        helper.make_opsetid("com.aarm", 1000)])
        onnx.save(model, tmp_path / name)
        return tmp_path / name

    assert not uses_custom_ops(save([helper.make_node("Identity", ["x"], ["y"])], "plain.onnx"))
    assert uses_custom_ops(save([helper.make_node("AarmGate", ["x"], ["y"], domain="com.aarm")], "kernel.onnx"))
