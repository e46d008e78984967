"""ONNX export: parity with PyTorch on onnxruntime CPU for every model and attention, dynamic batch,
two-stream graphs, metadata and sidecars, the eval-graph check, and the `export` command.

Exports take seconds each on the shared 2-core machine, so the default suite exports one model (AARM-ResNet-18,
shared with test_passes / test_fp16 through `cached_resnet18_aarm`); the full model x attention matrix, the
two-stream graph and the fresh-model command are marked slow and pass when run with `-m slow`.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn
from typer.testing import CliRunner

import aarm
from aarm.attention import ATTENTIONS, STAM
from aarm.checkpoint import save_checkpoint
from aarm.data.preprocessing import Preprocessing
from aarm.errors import AarmError, ConfigError
from export.cli import app
from export.onnx_export import RANDOM_OPS, check_eval_graph, export_onnx
from export.verify import verify_against_torch
from runtime.artifact import file_sha256, read_sidecar
from runtime.backends.onnxruntime_backend import OnnxRuntimeRunner
from runtime.errors import ArtifactError

SAMPLES = 32
RESIDUAL_SCALE = 0.2
# Small inputs per model: (size, frames); 2D models run K = 2 segments at 64x64.
SMALL = {"resnet3d18": (32, 8), "c3d": (112, 16)}


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Perturb every parameter (fusion weights away from their 1 / 0 start) and recalibrate the BatchNorm
    statistics on random data, so parity tests see a model with non-trivial, well-scaled activations.

    Conditioning as in a trained network, so that 1e-4 is above float32's own noise: each residual branch's
    last BatchNorm is scaled by 0.2 (trained ResNets keep these small; torchvision can even start them at 0),
    which keeps a deep random ResNet from amplifying rounding (a random ResNet-101 with unit-scale branches
    differs from itself in float64 by ~2e-4 in PyTorch alone), and the classifier is scaled so the scores
    are O(1). Returns the model in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("fuse.conv.weight"):
                p.copy_(1.0 + 0.5 * noise)
            elif name.endswith("fuse.conv.bias"):
                p.copy_(0.2 * noise)
            elif p.dim() == 1:
                p.add_(0.1 * noise)
        norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batch
        shapes = [p.input_shape(4) for p in _preps(model)]
        if norms:
            model.train()
            model(*(torch.randn(s, generator=gen) for s in shapes))
        for block in model.modules():
            last_bn = getattr(block, "bn3", None) or getattr(block, "bn2", None)
            if hasattr(block, "downsample") and last_bn is not None:
                last_bn.weight.mul_(RESIDUAL_SCALE)
                last_bn.bias.mul_(RESIDUAL_SCALE)
        model.eval()
        scale = float(model(*(torch.randn(s, generator=gen) for s in shapes)).abs().max())
        if scale > 1.0:
            for head in _classifiers(model):
                head.weight.div_(scale)
                head.bias.div_(scale)
    return model


def _classifiers(model: nn.Module) -> list[nn.Linear]:
    """The last nn.Linear before VCM in each stream (VCM's own fc excluded)."""
    found = []
    for stream in [model.rgb, model.flow] if isinstance(model, aarm.TwoStream) else [model]:
        linears = [m for n, m in stream.named_modules() if isinstance(m, nn.Linear) and not n.endswith("vcm.fc")]
        found.append(linears[-1])
    return found


def _preps(model: nn.Module) -> list[Preprocessing]:
    if isinstance(model, aarm.TwoStream):
        return [_prep(model.rgb), _prep(model.flow)]
    return [_prep(model)]


def _prep(model: nn.Module) -> Preprocessing:
    size, frames = SMALL.get(model.aarm_config["name"], (64, None))
    return Preprocessing.for_model(model.aarm_config, size=size, frames=frames)


def build(name: str, attention: str = "aarm", *, num_classes: int = 7, seed: int = 0, **options) -> nn.Module:
    """A registered model (2D: K = 2 segments unless given), randomised with `randomize`."""
    torch.manual_seed(seed)
    if aarm.models.get_spec(name).dims == 2:
        options.setdefault("segments", 2)
    return randomize(aarm.create_model(name, num_classes=num_classes, attention=attention, **options), seed)


def labels(n: int) -> list[str]:
    return [f"action_{i}" for i in range(n)]


def export_small(model: nn.Module, path: Path, **kw) -> Path:
    preps = _preps(model)
    config = model.rgb.aarm_config if isinstance(model, aarm.TwoStream) else model.aarm_config
    prep = preps[0] if len(preps) == 1 else preps
    export_onnx(model, path, classes=labels(config["num_classes"]), preprocessing=prep, trained=True, **kw)
    return path


def cached_resnet18_aarm(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path, Path]:
    """A randomised AARM-ResNet-18 (TSN, K = 2, 64x64, 7 classes) saved as a checkpoint and exported through
    `aarm-export export CHECKPOINT`, once per test session: (model, checkpoint, onnx)."""
    model = build("resnet18", "aarm", seed=1)
    root = tmp_path_factory.getbasetemp() / "shared_resnet18_aarm"
    ckpt, out = root / "model.pt", root / "model.onnx"
    if not out.exists():
        root.mkdir(parents=True, exist_ok=True)
        save_checkpoint(ckpt, model, classes=labels(7), preprocessing=_prep(model), trained=True, meta={"epoch": 3})
        result = CliRunner().invoke(app, ["export", str(ckpt), "-o", str(out), "--verify-samples", "4",
                                          "--json", str(root / "parity.json")])
        assert result.exit_code == 0, result.output
    return model, ckpt, out


def assert_parity(result: dict) -> None:
    assert result["samples"] == SAMPLES
    assert result["max_abs_error"] <= 1e-4, result
    assert result["top1_agreement"] == 1.0, result


# ------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    model, _, path = cached_resnet18_aarm(tmp_path_factory)
    return model, path


# ---------------------------------------------------------------------------------------------------- parity


def test_resnet18_aarm_matches_pytorch_on_32_inputs(exported):
    model, path = exported
    assert_parity(verify_against_torch(model, path, samples=SAMPLES, batch=16))


MATRIX = [(name, attention) for name in aarm.list_models() for attention in ATTENTIONS]


def _matrix_param(name: str, attention: str):
    # AARM-ResNet-18 runs in the default suite through the shared fixture; the full matrix is slow here.
    return pytest.param(name, attention, marks=[pytest.mark.slow], id=f"{name}-{attention}")


@pytest.mark.parametrize(("name", "attention"), [_matrix_param(n, a) for n, a in MATRIX])
def test_every_model_and_attention_exports_with_parity(name, attention, tmp_path):
    model = build(name, attention)
    path = export_small(model, tmp_path / f"{name}_{attention}.onnx")
    check_eval_graph(onnx.load(str(path)))
    batch = 4 if name == "c3d" else 16
    assert_parity(verify_against_torch(model, path, samples=SAMPLES, batch=batch))


@pytest.mark.slow
def test_two_stream_is_one_graph_with_rgb_and_flow_inputs(tmp_path):
    rgb = build("resnet18", "aarm", seed=3, segments=1)
    flow = build("resnet18", "aarm", seed=4, segments=1, in_channels=20)
    model = aarm.TwoStream(rgb, flow).eval()
    path = export_small(model, tmp_path / "two_stream.onnx")
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["rgb", "flow"]
    assert [d.dim_param or d.dim_value for d in graph.input[1].type.tensor_type.shape.dim] == ["N", "K", 20, 64, 64]
    sidecar = read_sidecar(path)
    assert [t.name for t in sidecar.inputs] == ["rgb", "flow"]
    assert [p.modality for p in sidecar.preprocessings()] == ["rgb", "flow"]
    assert sidecar.model["name"] == "two_stream"
    assert_parity(verify_against_torch(model, path, samples=SAMPLES, batch=16))


def test_dynamic_batch_runs_1_and_5_through_one_graph(exported):
    model, path = exported
    runner = OnnxRuntimeRunner.from_artifact(path).activate()
    for n in (1, 5):
        x = np.random.default_rng(n).standard_normal((n, 2, 3, 64, 64), dtype=np.float32)
        got = runner.infer({"input": x})["scores"]
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        assert got.shape == (n, 7)
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


# --------------------------------------------------------------------------------------- graph and sidecar


def test_graph_is_clean_eval_graph_with_symbolic_batch(exported):
    _, path = exported
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"Dropout", "RandomUniform", "RandomUniformLike", "Bernoulli", "Where", "GreaterOrEqual"}
    assert next(o.version for o in model.opset_import if o.domain == "") == 17
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", "K", 3, 64, 64]  # K dynamic too (test_dynamic_temporal)
    assert [d.dim_param or d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim] == ["N", 7]


def test_labels_and_preprocessing_in_metadata_and_sidecar(exported):
    model, path = exported
    meta = {p.key: json.loads(p.value) for p in onnx.load(str(path)).metadata_props if p.key.startswith("aarm.")}
    assert meta["aarm.classes"] == labels(7)
    assert Preprocessing.from_dict(meta["aarm.preprocessing"]) == _prep(model)
    assert meta["aarm.model"] == model.aarm_config
    sidecar = read_sidecar(path)  # verifies the sha256
    assert (sidecar.kind, sidecar.stage, sidecar.precision, sidecar.opset) == ("onnx", "export", "fp32", 17)
    assert sidecar.classes == labels(7) and sidecar.trained is True
    assert sidecar.inputs[0].shape == ["N", "K", 3, 64, 64] and sidecar.inputs[0].layout == "NKCHW"
    assert sidecar.input_shapes() == [["N", 2, 3, 64, 64]]
    assert sidecar.outputs[0].shape == ["N", 7]


def test_export_refuses_to_overwrite_and_bad_arguments(exported, tmp_path):
    model, path = exported
    with pytest.raises(AarmError, match="exists; pass `force` to overwrite it"):
        export_onnx(model, path, classes=labels(7), preprocessing=_prep(model), trained=True)
    with pytest.raises(ConfigError, match="3 class labels"):
        export_onnx(model, tmp_path / "x.onnx", classes=labels(3), preprocessing=_prep(model), trained=True)
    flow_prep = Preprocessing.for_model({**model.aarm_config, "in_channels": 20}, size=64)
    with pytest.raises(ConfigError, match="20 channels"):
        export_onnx(model, tmp_path / "x.onnx", classes=labels(7), preprocessing=flow_prep, trained=True)
    with pytest.raises(ConfigError, match="opset"):
        export_onnx(model, tmp_path / "x.onnx", classes=labels(7), preprocessing=_prep(model), trained=True, opset=13)
    assert not (tmp_path / "x.onnx").exists()


# ------------------------------------------------------------------------------------------ eval-graph check


def _graph(nodes, inits=(), inputs=("x",), output="y") -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(i, TensorProto.FLOAT, [2, 1, 4, 4]) for i in inputs],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)], initializer=list(inits),
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def test_check_eval_graph_refuses_random_ops():
    model = _graph([
        helper.make_node("RandomUniformLike", ["x"], ["r"], name="coin"),
        helper.make_node("Add", ["x", "r"], ["y"]),
    ])
    with pytest.raises(ArtifactError, match="RandomUniformLike node 'coin'"):
        check_eval_graph(model)
    dropout = _graph([helper.make_node("Dropout", ["x"], ["y"], name="drop")])
    with pytest.raises(ArtifactError, match="Dropout node 'drop'"):
        check_eval_graph(dropout)


def test_check_eval_graph_refuses_a_highlighted_map_branch_built_by_hand():
    eta = numpy_helper.from_array(np.array(0.9, np.float32), "eta")
    model = _graph([
        helper.make_node("Sigmoid", ["x"], ["a"]),
        helper.make_node("ReduceMax", ["a"], ["peak"], keepdims=1, axes=[1, 2, 3], name="peak"),
        helper.make_node("Mul", ["peak", "eta"], ["thresh"]),
        helper.make_node("GreaterOrEqual", ["a", "thresh"], ["mask"], name="highlight"),
        helper.make_node("Cast", ["mask"], ["y"], to=TensorProto.FLOAT),
    ], inits=[eta])
    with pytest.raises(ArtifactError, match="highlighted-map branch.*GreaterOrEqual node 'highlight'.*ReduceMax"):
        check_eval_graph(model)


def test_check_eval_graph_keeps_unrelated_comparisons_and_pools():
    """A max pool with no threshold, and a comparison against a constant, are not the highlight branch."""
    half = numpy_helper.from_array(np.array(0.5, np.float32), "half")
    model = _graph([
        helper.make_node("ReduceMax", ["x"], ["peak"], keepdims=1, axes=[1]),
        helper.make_node("Greater", ["x", "half"], ["mask"]),
        helper.make_node("Where", ["mask", "x", "peak"], ["y"]),
    ], inits=[half])
    check_eval_graph(model)


def test_check_eval_graph_refuses_stam_exported_in_training_mode():
    stam = STAM(8, chi=1.0).train()
    program = torch.onnx.export(stam, (torch.randn(2, 8, 6, 6),), None, dynamo=True, opset_version=18,
                                external_data=False)
    proto = program.model_proto
    assert {"GreaterOrEqual", "Where"} <= {n.op_type for n in proto.graph.node}
    with pytest.raises(ArtifactError, match="not an eval graph"):
        check_eval_graph(proto)
    for node in proto.graph.node:  # without its random pick, the highlight branch alone is still refused
        if node.op_type in RANDOM_OPS:
            node.op_type = "Identity" if node.input else "Constant"
    with pytest.raises(ArtifactError, match="highlighted-map branch"):
        check_eval_graph(proto)


# -------------------------------------------------------------------------------------------------- commands


def test_export_command_from_checkpoint(tmp_path_factory):
    _, ckpt, out = cached_resnet18_aarm(tmp_path_factory)
    sidecar = read_sidecar(out)
    assert sidecar.parent == str(ckpt) and sidecar.parent_sha256 == file_sha256(ckpt)
    assert sidecar.trained is True and sidecar.extra["checkpoint_meta"] == {"epoch": 3}
    parity = json.loads((out.parent / "parity.json").read_text())
    assert parity["reference"] == "pytorch" and parity["samples"] == 4
    assert parity["top1_agreement"] == 1.0 and parity["max_abs_error"] <= 1e-4


@pytest.mark.slow
def test_export_command_fresh_model_prints_parity(tmp_path):
    out = tmp_path / "fresh.onnx"
    result = CliRunner().invoke(app, [
        "export", "--model", "resnet18", "--attention", "none", "--num-classes", "4", "--input-size", "32",
        "--segments", "1", "-o", str(out), "--verify-samples", "4",
    ])
    assert result.exit_code == 0, result.output
    assert "top-1 agreement" in result.output and "100.0%" in result.output
    sidecar = read_sidecar(out)
    assert sidecar.trained is False and sidecar.input_shapes() == [["N", 1, 3, 32, 32]]
    assert sidecar.classes == [f"class_{i}" for i in range(4)]


def test_export_command_errors_are_one_line(tmp_path, exported):
    _, path = exported
    cli = str(Path(sys.executable).with_name("aarm-export"))
    done = subprocess.run([cli, "export", "--model", "resnet18", "--num-classes", "4", "-o", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().startswith("error:") and "--force" in done.stderr
    with pytest.raises(ConfigError, match="CHECKPOINT or --model"):
        CliRunner().invoke(app, ["export", "-o", str(tmp_path / "m.onnx")], catch_exceptions=False)
