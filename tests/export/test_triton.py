"""Triton model repository: config through Triton's own protobuf schema, dims, labels, batching, files."""

import numpy as np
import onnx
import pytest
from google.protobuf import text_format
from onnx import TensorProto, helper, numpy_helper
from tritonclient.grpc import model_config_pb2 as mc
from typer.testing import CliRunner

from aarm.data.preprocessing import Preprocessing
from aarm.errors import ConfigError
from export.cli import app
from export.triton import (
    TritonOptions,
    config_text,
    default_model_name,
    parse_config,
    triton_config,
    write_triton_model,
)
from runtime.artifact import Sidecar, TensorSpec, read_sidecar, write_sidecar
from runtime.errors import ArtifactError

CONFIG = {
    "name": "resnet18",
    "num_classes": 3,
    "attention": "aarm",
    "in_channels": 3,
    "options": {"vcm": True, "segments": 2},
}
CLASSES = ["clap", "jump", "wave"]


def _sidecar(kind="onnx", batch="N", precision="fp32", profile=(1, 8, 16)) -> Sidecar:
    extra = {}
    if kind == "engine":
        lo, opt, hi = profile
        extra = {
            "tensorrt": {
                "version": "11.4.0.106",
                "gpu": "NVIDIA H100 80GB HBM3",
                "compute_capability": "9.0",
                "profile": {
                    "clips": {
                        "min": [lo, 2, 3, 32, 32],
                        "opt": [opt, 2, 3, 32, 32],
                        "max": [hi, 2, 3, 32, 32],
                    }
                },
            }
        }
    return Sidecar(
        kind=kind,
        stage="build" if kind == "engine" else "export",
        precision=precision,
        model=CONFIG,
        classes=CLASSES,
        preprocessing=Preprocessing.for_model(CONFIG, size=32).to_dict(),
        inputs=[TensorSpec("clips", [batch, 2, 3, 32, 32], "float32", "NKCHW")],
        outputs=[TensorSpec("scores", [batch, 3], "float32", "NC")],
        opset=17,
        extra=extra,
    )


def _onnx_artifact(tmp_path, batch="N"):
    """A small valid ONNX graph with the sidecar's I/O: mean over (K, H, W) of the clip, then a 3x3 matrix."""
    nodes = [
        helper.make_node("ReduceMean", ["clips"], ["m"], axes=[1, 3, 4], keepdims=0, name="mean"),
        helper.make_node("MatMul", ["m", "w"], ["scores"], name="fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("clips", TensorProto.FLOAT, [batch, 2, 3, 32, 32])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, 3])],
        [numpy_helper.from_array(np.eye(3, dtype=np.float32), "w")],
    )
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    write_sidecar(path, _sidecar(batch=batch))
    return path


def _engine_artifact(tmp_path, profile=(1, 8, 16)):
    path = tmp_path / "model.fp16.engine"
    path.write_bytes(b"serialized plan bytes")
    write_sidecar(path, _sidecar("engine", precision="fp16", profile=profile))
    return path


def test_onnx_repository(tmp_path):
    artifact = _onnx_artifact(tmp_path)
    options = TritonOptions(instances=2, kind="gpu", preferred_batch=(4, 8), max_queue_delay_us=250)
    target = write_triton_model(artifact, tmp_path / "repo", options)
    assert target == tmp_path / "repo" / "resnet18_aarm_fp32"
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == [
        "1",
        "1/model.onnx",
        "1/model.onnx.json",
        "config.pbtxt",
        "labels.txt",
    ]
    # parse with Triton's own schema, independently of export.triton
    config = text_format.Parse((target / "config.pbtxt").read_text(), mc.ModelConfig())
    assert (config.name, config.backend, config.max_batch_size) == ("resnet18_aarm_fp32", "onnxruntime", 32)
    (inp,) = config.input
    (out,) = config.output
    assert (inp.name, inp.data_type, list(inp.dims)) == ("clips", mc.TYPE_FP32, [2, 3, 32, 32])
    assert (out.name, out.data_type, list(out.dims), out.label_filename) == (
        "scores",
        mc.TYPE_FP32,
        [3],
        "labels.txt",
    )
    (group,) = config.instance_group
    assert (group.kind, group.count) == (mc.ModelInstanceGroup.KIND_GPU, 2)
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert config.dynamic_batching.max_queue_delay_microseconds == 250
    assert (target / "labels.txt").read_text().splitlines() == CLASSES
    assert (target / "1" / "model.onnx").read_bytes() == artifact.read_bytes()
    assert read_sidecar(target / "1" / "model.onnx").classes == CLASSES  # the copied sidecar still verifies
    assert [p.name for p in (tmp_path / "repo").iterdir()] == ["resnet18_aarm_fp32"]  # no temp dirs left


def test_engine_repository(tmp_path):
    artifact = _engine_artifact(tmp_path)
    target = write_triton_model(artifact, tmp_path / "repo", TritonOptions(name="aarm_trt"))
    config = parse_config((target / "config.pbtxt").read_text())
    assert (config.name, config.backend, config.max_batch_size) == ("aarm_trt", "tensorrt", 16)  # profile max
    assert list(config.input[0].dims) == [2, 3, 32, 32] and list(config.output[0].dims) == [3]
    assert config.output[0].label_filename == "labels.txt"
    assert (target / "1" / "model.plan").read_bytes() == b"serialized plan bytes"
    assert read_sidecar(target / "1" / "model.plan").kind == "engine"
    smaller = triton_config(read_sidecar(artifact), TritonOptions(max_batch=8))
    assert smaller.max_batch_size == 8
    assert default_model_name(read_sidecar(artifact)) == "resnet18_aarm_fp16_trt"


def test_engine_limits(tmp_path):
    sidecar = read_sidecar(_engine_artifact(tmp_path))
    with pytest.raises(ConfigError, match="exceeds the engine profile"):
        triton_config(sidecar, TritonOptions(max_batch=64))
    with pytest.raises(ConfigError, match="GPU only"):
        triton_config(sidecar, TritonOptions(kind="cpu"))
    with pytest.raises(ArtifactError, match="starts at batch 2"):
        triton_config(_sidecar("engine", profile=(2, 8, 16)), TritonOptions())
    with pytest.raises(ConfigError, match="preferred batch 32"):
        triton_config(sidecar, TritonOptions(preferred_batch=(4, 32)))


def test_fixed_batch_artifact_has_no_batching(tmp_path):
    config = triton_config(_sidecar(batch=1), TritonOptions(kind="cpu"))
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert list(config.input[0].dims) == [1, 2, 3, 32, 32] and list(config.output[0].dims) == [1, 3]
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert parse_config(config_text(config)) == config
    with pytest.raises(ConfigError, match="fixed batch"):
        triton_config(_sidecar(batch=1), TritonOptions(max_batch=8))


def test_config_round_trip_and_validation():
    config = triton_config(_sidecar(), TritonOptions(preferred_batch=(2,)))
    text = config_text(config)
    assert "dims: 32" in text and 'label_filename: "labels.txt"' in text and "KIND_GPU" in text
    assert parse_config(text) == config
    with pytest.raises(ArtifactError, match="does not parse"):
        parse_config(text + "\nmax_batch: 3\n")
    with pytest.raises(ArtifactError, match="preferred batch"):
        parse_config(text.replace("preferred_batch_size: 2", "preferred_batch_size: 64"))
    with pytest.raises(ArtifactError, match="invalid dims"):
        parse_config(text.replace("dims: 32", "dims: 0", 1))
    with pytest.raises(ConfigError, match="model name"):
        triton_config(_sidecar(), TritonOptions(name="../escape"))


def test_existing_model_needs_force(tmp_path):
    artifact = _onnx_artifact(tmp_path)
    repo = tmp_path / "repo"
    target = write_triton_model(artifact, repo, TritonOptions(max_batch=4))
    (target / "stale.txt").write_text("old")
    with pytest.raises(ArtifactError, match="--force"):
        write_triton_model(artifact, repo, TritonOptions(max_batch=8))
    assert parse_config((target / "config.pbtxt").read_text()).max_batch_size == 4
    write_triton_model(artifact, repo, TritonOptions(max_batch=8, force=True))
    assert parse_config((target / "config.pbtxt").read_text()).max_batch_size == 8
    assert not (target / "stale.txt").exists()
    assert [p.name for p in repo.iterdir()] == [target.name]


def test_cli_triton(tmp_path):
    artifact = _onnx_artifact(tmp_path)
    result = CliRunner().invoke(
        app,
        [
            "triton",
            str(artifact),
            "--repo",
            str(tmp_path / "repo"),
            "--name",
            "aarm",
            "--kind",
            "cpu",
            "--preferred-batch",
            "4,8",
            "--max-batch",
            "16",
        ],
    )
    assert result.exit_code == 0, result.output
    config = parse_config((tmp_path / "repo" / "aarm" / "config.pbtxt").read_text())
    assert config.max_batch_size == 16 and list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU


def test_external_weights_are_copied(tmp_path):
    import onnxruntime as ort

    artifact = _onnx_artifact(tmp_path)
    model = onnx.load(str(artifact))
    onnx.save(model, str(artifact), save_as_external_data=True, location="model.onnx.data", size_threshold=0)
    write_sidecar(artifact, _sidecar())
    target = write_triton_model(artifact, tmp_path / "repo", TritonOptions())
    assert (target / "1" / "model.onnx.data").is_file()
    session = ort.InferenceSession(str(target / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    (scores,) = session.run(None, {"clips": np.ones((2, 2, 3, 32, 32), np.float32)})
    np.testing.assert_allclose(scores, np.ones((2, 3)))


def test_external_data_outside_the_models_folder_is_refused(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    artifact = _onnx_artifact(folder)
    onnx.save(onnx.load(str(artifact)), str(artifact), save_as_external_data=True, location="model.onnx.data",
              size_threshold=0)
    secret = tmp_path / "secret"
    secret.write_bytes((folder / "model.onnx.data").read_bytes())
    (folder / "link.data").symlink_to(secret)
    for location in ("../secret", str(secret), "link.data"):
        model = onnx.load(str(artifact), load_external_data=False)
        (entry,) = [e for e in model.graph.initializer[0].external_data if e.key == "location"]
        entry.value = location
        onnx.save(model, str(artifact))
        write_sidecar(artifact, _sidecar())
        with pytest.raises(ArtifactError, match="is outside the model's folder") as info:
            write_triton_model(artifact, tmp_path / "repo", TritonOptions())
        assert repr(location) in str(info.value) and "\n" not in str(info.value)
        assert not (tmp_path / "repo").exists()  # refused before anything was written
