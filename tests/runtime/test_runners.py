"""Runners against the PyTorch reference; provider reporting; refusing artifacts that do not match."""

import importlib.util
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnx
import pytest
import torch
from runtime_artifacts import derive_artifact

from aarm.errors import AarmError, BackendUnavailable, ConfigError
from runtime.artifact import sidecar_path
from runtime.backends import open_runner, resolve_backend, runner_class
from runtime.backends.onnxruntime_backend import OnnxRuntimeRunner
from runtime.backends.torch_backend import TorchRunner
from runtime.errors import ArtifactError
from runtime.runner import FeedError, InputSpec


def _reference(tiny, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return tiny.model(torch.from_numpy(x)).numpy()


def test_torch_runner_matches_the_model(tiny):
    x = np.random.default_rng(1).standard_normal((3, 2, 3, 32, 32), dtype=np.float32)
    runner = open_runner(tiny.checkpoint)
    assert isinstance(runner, TorchRunner)
    assert runner.input_specs == [InputSpec("input", ("N", 2, 3, 32, 32), "float32")]
    assert runner.classes == tiny.classes and runner.provider == "torch-cpu" and runner.frames_per_clip == 2
    with runner:
        scores = runner.infer({"input": x})["scores"]
    np.testing.assert_allclose(scores, _reference(tiny, x), atol=1e-6)


def test_onnxruntime_runner_matches_pytorch_and_reports_provider(tiny):
    x = np.random.default_rng(2).standard_normal((4, 2, 3, 32, 32), dtype=np.float32)
    runner = open_runner(tiny.onnx, threads=1)
    assert isinstance(runner, OnnxRuntimeRunner)
    assert runner.provider == "CPUExecutionProvider" and runner.providers == ["CPUExecutionProvider"]
    assert runner.describe()["threads"] == 1 and runner.precision == "fp32"
    assert [(s.name, s.shape) for s in runner.input_specs] == [("input", ("N", 2, 3, 32, 32))]
    with runner:
        scores = runner.infer({"input": x})["scores"]
    assert scores.shape == (4, 5)
    assert np.abs(scores - _reference(tiny, x)).max() < 1e-4


@pytest.mark.parametrize("provider", ["cuda", "CUDAExecutionProvider", "tensorrt"])
def test_requesting_an_unusable_provider_raises_instead_of_falling_back(tiny, provider):
    with pytest.raises(BackendUnavailable, match="ExecutionProvider"):
        open_runner(tiny.onnx, providers=[provider])


def test_unknown_provider_and_backend_are_refused(tiny):
    with pytest.raises(BackendUnavailable, match="not in this onnxruntime build"):
        open_runner(tiny.onnx, providers=["MadeUpExecutionProvider"])
    with pytest.raises(ConfigError, match="runs on onnxruntime"):
        open_runner(tiny.onnx, backend="torch")
    with pytest.raises(ArtifactError, match="unknown artifact type"):
        resolve_backend("model.tflite")
    assert resolve_backend("m.engine") == "tensorrt" and resolve_backend("m.onnx", "ort") == "onnxruntime"
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailable, match="no CUDA"):
            open_runner(tiny.checkpoint, device="cuda")


def test_tampered_artifact_is_refused(tiny, tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(tiny.onnx.read_bytes() + b"\0")
    sidecar_path(bad).write_text(sidecar_path(tiny.onnx).read_text())
    with pytest.raises(ArtifactError, match="sha256"):
        open_runner(bad)


def test_sidecar_that_does_not_describe_the_graph_is_refused(tiny, tmp_path):
    model = onnx.load(str(tiny.onnx))
    renamed = derive_artifact(tiny.onnx, model, tmp_path / "renamed.onnx")
    data = json.loads(sidecar_path(renamed).read_text())
    data["inputs"][0]["name"] = "rgb"
    sidecar_path(renamed).write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match=r"declares inputs \['rgb'\]"):
        open_runner(renamed)
    data["inputs"][0].update(name="input", shape=["N", 3, 3, 32, 32], ranges=None)  # K fixed at 3: not the graph
    sidecar_path(renamed).write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="input 'input' is .* in the graph, its sidecar says"):
        open_runner(renamed)
    data["inputs"][0].update(shape=[1, 2, 3, 32, 32])  # graph has a dynamic batch
    sidecar_path(renamed).write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="its sidecar says"):
        open_runner(renamed)


def test_feed_is_checked(tiny):
    runner = open_runner(tiny.onnx)
    x = np.zeros((1, 2, 3, 32, 32), np.float32)
    with pytest.raises(AarmError, match="not active"):
        runner.infer({"input": x})
    with runner:
        with pytest.raises(FeedError, match="takes"):
            runner.infer({"x": x})
        with pytest.raises(FeedError, match="float64"):
            runner.infer({"input": x.astype(np.float64)})
        with pytest.raises(FeedError, match="shape"):
            runner.infer({"input": np.zeros((1, 3, 3, 32, 32), np.float32)})
        assert runner.infer({"input": x})["scores"].shape == (1, 5)
    assert not runner.is_active


def test_one_runner_shared_by_threads_gives_the_same_answers(tiny):
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((2, 2, 3, 32, 32), dtype=np.float32) for _ in range(8)]
    for runner in (open_runner(tiny.onnx, threads=1), open_runner(tiny.checkpoint, threads=1)):
        with runner:
            serial = [runner.infer({"input": x})["scores"] for x in xs]
            with ThreadPoolExecutor(4) as pool:
                threaded = list(pool.map(lambda x, r=runner: r.infer({"input": x})["scores"], xs))
        for a, b in zip(serial, threaded, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_in_memory_graph_without_sidecar(tiny):
    runner = OnnxRuntimeRunner(tiny.onnx.read_bytes(), name="bytes")
    assert runner.path is None and runner.classes == [] and runner.input_specs[0].shape[:2] == ("N", "K")
    x = np.random.default_rng(0).standard_normal((2, 2, 3, 32, 32), dtype=np.float32)  # no sidecar: K from the feed
    with runner:
        assert runner.infer({"input": x})["scores"].shape == (2, 5)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_engine_without_tensorrt_raises_backend_unavailable(tiny, tmp_path):
    from runtime.artifact import read_sidecar, write_sidecar

    engine = tmp_path / "model.fp32.engine"
    engine.write_bytes(b"not really an engine")
    sc = read_sidecar(tiny.onnx).derive(kind="engine", stage="build", extra={"tensorrt": {}})
    write_sidecar(engine, sc, parent=tiny.onnx)
    assert runner_class("tensorrt").__name__ == "TensorRTRunner"
    with pytest.raises(BackendUnavailable):
        open_runner(engine)


def test_open_runner_opens_an_engine_on_the_requested_gpu(tiny, tmp_path, monkeypatch):
    import fake_tensorrt

    from runtime.artifact import read_sidecar, write_sidecar

    engine_file = tmp_path / "model.fp32.engine"
    engine_file.write_bytes(b"a plan the fake tensorrt module hands back as an engine")
    gpu, cc = fake_tensorrt.GPU
    info = {"version": fake_tensorrt.VERSION, "gpu": gpu, "compute_capability": cc}
    sc = read_sidecar(tiny.onnx).derive(kind="engine", stage="build", extra={"tensorrt": info})
    write_sidecar(engine_file, sc, parent=tiny.onnx)
    engine = object()
    records = fake_tensorrt.install(monkeypatch, engine)
    runner = open_runner(engine_file, device="cuda:1")
    assert runner.backend == "tensorrt" and runner.device == "cuda:1" and runner.engine is engine
    assert open_runner(engine_file).device == "cuda:0"
    assert [r["device"] for r in records if "data" in r] == [1, 0]
    with pytest.raises(ConfigError, match="cuda or cuda:<i>"):
        open_runner(engine_file, device="cpu")


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_tensorrt_engine_matches_pytorch(tiny, tmp_path):
    pytest.importorskip("tensorrt", reason="needs TensorRT's Python bindings")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from export.tensorrt_build import BuildOptions, build_engine

    engine, _ = build_engine(tiny.onnx, BuildOptions(output=tmp_path / "model.fp32.engine"))
    x = np.random.default_rng(4).standard_normal((2, 2, 3, 32, 32), dtype=np.float32)
    with open_runner(engine) as runner:
        assert runner.provider == "TensorRT"
        scores = runner.infer({"input": x})["scores"]
    assert np.abs(scores - _reference(tiny, x)).max() < 1e-3


def test_two_stream_graph_takes_both_inputs(tiny, tmp_path):
    """A two-input graph ("rgb" (N, 2, 3, 32, 32), "flow" (N, 2, 20, 32, 32)) with a matching sidecar."""
    from dataclasses import replace

    from onnx import TensorProto, helper, numpy_helper

    from runtime.artifact import TensorSpec, read_sidecar, write_sidecar

    rng = np.random.default_rng(5)
    dims = {"rgb": 2 * 3 * 32 * 32, "flow": 2 * 20 * 32 * 32}
    nodes, inits = [], []
    for name, d in dims.items():
        inits.append(numpy_helper.from_array(rng.standard_normal((d, 5), dtype=np.float32) * 0.01, f"w_{name}"))
        nodes += [helper.make_node("Flatten", [name], [f"{name}_flat"], axis=1),
                  helper.make_node("MatMul", [f"{name}_flat", f"w_{name}"], [f"{name}_scores"])]
    nodes.append(helper.make_node("Add", ["rgb_scores", "flow_scores"], ["scores"]))
    graph = helper.make_graph(nodes, "two_stream", [
        helper.make_tensor_value_info("rgb", TensorProto.FLOAT, ["N", 2, 3, 32, 32]),
        helper.make_tensor_value_info("flow", TensorProto.FLOAT, ["N", 2, 20, 32, 32]),
    ], [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 5])], inits)
    path = tmp_path / "two.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(path))
    flow_prep = replace(tiny.preprocessing, modality="flow", mean=(0.5, 0.5), std=(0.226, 0.226))
    write_sidecar(path, read_sidecar(tiny.onnx).derive(
        inputs=[TensorSpec("rgb", ["N", 2, 3, 32, 32], layout="NKCHW"),
                TensorSpec("flow", ["N", 2, 20, 32, 32], layout="NKCHW")],
        preprocessing=[tiny.preprocessing.to_dict(), flow_prep.to_dict()]))
    runner = open_runner(path)
    assert [s.name for s in runner.input_specs] == ["rgb", "flow"]
    assert runner.frames_per_clip == 2 and [p.modality for p in runner.preprocessing] == ["rgb", "flow"]
    with runner:
        feed = runner.example_feed(3)
        assert feed["flow"].shape == (3, 2, 20, 32, 32)
        assert runner.infer(feed)["scores"].shape == (3, 5)
        with pytest.raises(FeedError, match="disagree on the batch"):
            runner.infer({"rgb": feed["rgb"], "flow": feed["flow"][:2]})


def test_graph_with_fused_kernels_opens_with_the_library_built_here(tiny, tmp_path, monkeypatch):
    from export.passes import optimize_onnx

    fused = tmp_path / "model.kernels.onnx"
    sidecar, _ = optimize_onnx(tiny.onnx, fused, kernels=True)
    assert sidecar.extra["custom_ops"]["domain"] == "com.aarm"
    feed = {"input": np.random.default_rng(0).standard_normal((2, *tiny.preprocessing.input_shape(1)[1:]))
            .astype(np.float32)}
    with open_runner(fused, threads=1) as runner, open_runner(tiny.onnx, threads=1) as plain:
        want = plain.infer(feed)["scores"]
        np.testing.assert_allclose(runner.infer(feed)["scores"], want, atol=1e-4)
    moved = json.loads(sidecar_path(fused).read_text())
    moved["extra"]["custom_ops"]["library"] = str(tmp_path / "gone.so")  # the sidecar's path is never used
    sidecar_path(fused).write_text(json.dumps(moved))
    with open_runner(fused, threads=1) as runner:
        np.testing.assert_allclose(runner.infer(feed)["scores"], want, atol=1e-4)
    monkeypatch.setenv("AARM_KERNEL_CACHE", str(tmp_path / "empty-cache"))  # no library built here
    with pytest.raises(ArtifactError, match="com.aarm custom ops.*re-run optimize with `kernels`"):
        open_runner(fused)
