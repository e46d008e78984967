"""Engine compatibility checks with fake TensorRT versions and GPUs (CPU), and the TensorRT-less paths."""

import ctypes.util
import importlib.util

import pytest

from aarm.data.preprocessing import Preprocessing
from aarm.errors import BackendUnavailable
from export.help_format import flag_words
from runtime.artifact import Sidecar, TensorSpec, write_sidecar
from runtime.backends import open_runner
from runtime.errors import ArtifactError
from runtime.tensorrt_engine import (
    EngineTarget,
    check_engine_compatible,
    compatibility_problems,
    current_gpu,
    tensorrt_version,
)

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None
HAVE_DRIVER = ctypes.util.find_library("cuda") is not None
CONFIG = {
    "name": "resnet18",
    "num_classes": 3,
    "attention": "aarm",
    "in_channels": 3,
    "options": {"vcm": True, "segments": 2},
}

H100 = EngineTarget("11.4.0.106", "NVIDIA H100 80GB HBM3", "9.0")


def fake_engine(
    tmp_path, *, target=H100, hardware="none", version_compatible=False, kind="engine", info=True
):
    """An engine file (arbitrary bytes: nothing here deserializes it) with a build sidecar."""
    path = tmp_path / "model.fp16.engine"
    path.write_bytes(b"not really a TensorRT plan")
    extra = (
        {
            "tensorrt": {
                "version": target.tensorrt,
                "gpu": target.gpu,
                "compute_capability": target.compute_capability,
                "hardware_compatibility": hardware,
                "version_compatible": version_compatible,
            }
        }
        if info
        else {}
    )
    sc = Sidecar(
        kind=kind,
        stage="build",
        precision="fp16",
        model=CONFIG,
        classes=["a", "b", "c"],
        preprocessing=Preprocessing.for_model(CONFIG, size=32).to_dict(),
        inputs=[TensorSpec("clips", ["N", 2, 3, 32, 32], "float32", "NKCHW")],
        outputs=[TensorSpec("scores", ["N", 3], "float32", "NC")],
        opset=17,
        parent="out/model.fp16.onnx",
        parent_sha256="0" * 64,
        extra=extra,
    )
    write_sidecar(path, sc)
    return path


def test_same_machine_is_compatible():
    assert compatibility_problems(H100, H100) == []
    # the build number does not matter, major.minor.patch does
    assert compatibility_problems(H100, EngineTarget("11.4.0.200", H100.gpu, "9.0")) == []


def test_tensorrt_version_mismatch():
    (problem,) = compatibility_problems(H100, EngineTarget("11.5.0.10", H100.gpu, "9.0"))
    assert "11.4.0.106" in problem and "11.5.0.10" in problem


def test_version_compatible_engines():
    def check(running):
        return compatibility_problems(H100, EngineTarget(running, H100.gpu, "9.0"), version_compatible=True)

    assert check("11.6.1.2") == [] and check("11.4.0.106") == []
    assert check("11.3.0.1") and check("12.0.0.1") and check("10.3.0.30")


def test_gpu_model_and_compute_capability():
    pcie = EngineTarget(H100.tensorrt, "NVIDIA H100 PCIe", "9.0")
    (problem,) = compatibility_problems(H100, pcie)
    assert "NVIDIA H100 PCIe" in problem and "rebuild with `hardware_compat` same-cc" in problem
    assert "rebuild with --hardware-compat same-cc" in flag_words(problem, {})  # as `aarm-export predict` says it
    assert compatibility_problems(H100, pcie, hardware_compat="same-cc") == []
    a100 = EngineTarget(H100.tensorrt, "NVIDIA A100-SXM4-40GB", "8.0")
    (problem,) = compatibility_problems(H100, a100, hardware_compat="same-cc")
    assert "compute capability 9.0" in problem
    assert compatibility_problems(H100, a100, hardware_compat="ampere+") == []
    t4 = EngineTarget(H100.tensorrt, "Tesla T4", "7.5")
    (problem,) = compatibility_problems(H100, t4, hardware_compat="ampere+")
    assert ">= 8.0" in problem
    both = compatibility_problems(H100, EngineTarget("10.3.0.30", "Orin", "8.7"))
    assert len(both) == 2
    with pytest.raises(ArtifactError):
        compatibility_problems(H100, H100, hardware_compat="turing+")


def test_check_engine_compatible_with_fake_running_targets(tmp_path):
    path = fake_engine(tmp_path)
    sidecar = check_engine_compatible(path, running=H100)
    assert sidecar.kind == "engine" and sidecar.precision == "fp16"
    orin = EngineTarget("10.3.0.30", "Orin", "8.7")
    with pytest.raises(ArtifactError, match="cannot run here") as info:
        check_engine_compatible(path, running=orin)
    message = str(info.value)
    assert "TensorRT 11.4.0.106" in message and "10.3.0.30" in message and "Orin" in message
    assert message.endswith("; rebuild it from out/model.fp16.onnx on this machine")


def test_an_engine_sidecar_without_its_build_facts_says_to_rebuild():
    from runtime.tensorrt_engine import EngineTarget

    sidecar = Sidecar(kind="engine", stage="build", precision="fp16", model=CONFIG, classes=["a", "b", "c"],
                      preprocessing={}, inputs=[], outputs=[], extra={})
    with pytest.raises(ArtifactError, match="rebuild the engine with `build_engine`$") as info:
        EngineTarget.from_sidecar(sidecar)
    assert flag_words(str(info.value), {}).endswith("rebuild the engine with aarm-export build")


def test_check_engine_compatible_reads_recorded_options(tmp_path):
    path = fake_engine(tmp_path, hardware="ampere+", version_compatible=True)
    assert (
        check_engine_compatible(path, running=EngineTarget("11.9.0.1", "NVIDIA L4", "8.9")).kind == "engine"
    )
    with pytest.raises(ArtifactError, match=">= 8.0"):
        check_engine_compatible(path, running=EngineTarget("11.9.0.1", "Tesla T4", "7.5"))


def test_check_engine_refuses_bad_sidecars(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "c").mkdir()
    with pytest.raises(ArtifactError, match="expected a TensorRT engine"):
        check_engine_compatible(fake_engine(tmp_path / "a", kind="onnx"), running=H100)
    with pytest.raises(ArtifactError, match="extra.tensorrt"):
        check_engine_compatible(fake_engine(tmp_path / "b", info=False), running=H100)
    modified = fake_engine(tmp_path / "c")
    modified.write_bytes(b"another plan")
    with pytest.raises(ArtifactError, match="sha256"):
        check_engine_compatible(modified, running=H100)


@pytest.mark.skipif(HAVE_TRT, reason="checks the path taken where TensorRT is missing")
def test_without_tensorrt(tmp_path):
    assert tensorrt_version() is None
    path = fake_engine(tmp_path, target=EngineTarget("1.0.0", "nowhere", "1.0"))
    assert check_engine_compatible(path).kind == "engine"  # nothing to compare against here
    with pytest.raises(BackendUnavailable, match="pip install tensorrt"):
        open_runner(path)


@pytest.mark.skipif(HAVE_DRIVER, reason="checks the path taken where no NVIDIA driver is installed")
def test_current_gpu_without_driver():
    with pytest.raises(BackendUnavailable, match="NVIDIA driver"):
        current_gpu()


@pytest.mark.gpu
def test_current_gpu_reads_name_and_capability():
    if not HAVE_DRIVER:
        pytest.skip("needs an NVIDIA driver (libcuda)")
    name, cc = current_gpu()
    major, minor = (int(v) for v in cc.split("."))
    assert name and major >= 3 and minor >= 0


def test_cuda_device_index_is_the_runners_device_convention():
    from aarm.errors import ConfigError
    from runtime.tensorrt_engine import cuda_device_index

    assert cuda_device_index(None) == 0 and cuda_device_index("cuda") == 0 and cuda_device_index("cuda:3") == 3
    for bad in ("cpu", "cuda:", "cuda:x", "gpu:1", "cuda:-1"):
        with pytest.raises(ConfigError, match="cuda or cuda:<i>"):
            cuda_device_index(bad)


class FakeEngine:
    """The public `trt.ICudaEngine` getters engine_io uses: input (N, 2, 3, 32, 32) float32, output scores."""

    def __init__(self, input_name="clips", shape=(-1, 2, 3, 32, 32), dtype="float32", classes=3):
        import numpy as np

        self.io = [(input_name, "IN", list(shape), np.dtype(dtype)),
                   ("scores", "OUT", [-1, classes], np.dtype("float32"))]
        self.num_io_tensors = len(self.io)

    def get_tensor_name(self, i):
        return self.io[i][0]

    def _get(self, name, k):
        return next(t[k] for t in self.io if t[0] == name)

    def get_tensor_mode(self, name):
        return self._get(name, 1)

    def get_tensor_shape(self, name):
        return self._get(name, 2)

    def get_tensor_dtype(self, name):
        return self._get(name, 3)


FAKE_TRT = type("FakeTrt", (), {"TensorIOMode": type("Mode", (), {"INPUT": "IN", "OUTPUT": "OUT"})})


def test_engine_io_reads_bindings_through_public_getters():
    from runtime.tensorrt_engine import engine_io

    inputs, outputs, output_shapes = engine_io(FakeEngine(), FAKE_TRT)
    assert inputs == [("clips", [-1, 2, 3, 32, 32], "float32")] and outputs == ["scores"]
    assert output_shapes == {"scores": [-1, 3]}


class FakeTrtRunner:
    """Polygraphy's TrtRunner surface the backend may use: activate / infer / deactivate, nothing internal."""

    def __init__(self, calls):
        self.calls = calls

    def activate(self):
        self.calls.append("activate")

    def deactivate(self):
        self.calls.append("deactivate")

    def infer(self, feed):
        import numpy as np

        self.calls.append("infer")
        return {"scores": np.zeros((feed["clips"].shape[0], 3), np.float32)}


def _fake_runner(tmp_path, monkeypatch, engine, index=1):
    import functools
    import threading

    import runtime.backends.tensorrt_backend as backend
    from runtime.artifact import read_sidecar

    current = []
    monkeypatch.setattr(backend, "use_cuda_device", lambda i: current.append((i, threading.get_ident())))
    monkeypatch.setattr(backend, "engine_io", functools.partial(backend.engine_io, trt=FAKE_TRT))
    path = fake_engine(tmp_path)
    runner = backend.TensorRTRunner(path, engine, read_sidecar(path), device_index=index)
    calls = []
    runner.trt_runner = FakeTrtRunner(calls)
    return runner, calls, current


def test_tensorrt_runner_runs_on_its_device_from_any_thread(tmp_path, monkeypatch):
    import threading

    import numpy as np

    runner, calls, current = _fake_runner(tmp_path, monkeypatch, FakeEngine())
    assert runner.device == "cuda:1" and runner.describe()["device"] == "cuda:1"
    with runner:
        x = np.zeros((2, 2, 3, 32, 32), np.float32)
        out = []
        worker = threading.Thread(target=lambda: out.append(runner.infer({"clips": x})["scores"].shape))
        worker.start()
        worker.join()
    assert out == [(2, 3)] and calls == ["activate", "infer", "deactivate"]
    assert {i for i, _ in current} == {1} and worker.ident in {t for _, t in current}


def test_tensorrt_runner_refuses_an_engine_its_sidecar_does_not_describe(tmp_path, monkeypatch):
    runner, calls, _ = _fake_runner(tmp_path, monkeypatch, FakeEngine(input_name="images"))
    with pytest.raises(ArtifactError, match=r"declares inputs \['clips'\], the graph has \['images'\]"):
        runner.activate()
    assert calls == [] and not runner.is_active
    runner, calls, _ = _fake_runner(tmp_path, monkeypatch, FakeEngine(dtype="float16"))
    with pytest.raises(ArtifactError, match="float16 in the graph"):
        runner.activate()
    runner, calls, _ = _fake_runner(tmp_path, monkeypatch, FakeEngine(classes=4))
    with pytest.raises(ArtifactError, match="scores 4 classes, its sidecar names 3"):
        runner.activate()


def test_opening_an_engine_on_cpu_is_a_config_error(tmp_path):
    from aarm.errors import ConfigError
    from runtime.backends.tensorrt_backend import TensorRTRunner

    with pytest.raises(ConfigError, match="cuda or cuda:<i>"):
        TensorRTRunner.from_engine(fake_engine(tmp_path), device="cpu")


# -- deserialization: this project's own trt.Runtime, host code off ------------------------------------------
def test_engines_deserialize_with_host_code_off(tmp_path, monkeypatch):
    import fake_tensorrt

    from runtime.tensorrt_engine import load_engine

    engine = FakeEngine()
    records = fake_tensorrt.install(monkeypatch, engine)
    path = fake_engine(tmp_path)
    assert load_engine(path, device=2) is engine
    (record,) = [r for r in records if "data" in r]
    assert record == {"data": path.read_bytes(), "host_code": False, "device": 2}


def test_version_compatible_engines_need_host_code_allowed(tmp_path, monkeypatch):
    import fake_tensorrt

    from runtime.backends.tensorrt_backend import TensorRTRunner
    from runtime.tensorrt_engine import load_engine

    engine = FakeEngine()
    records = fake_tensorrt.install(monkeypatch, engine)
    path = fake_engine(tmp_path, version_compatible=True)
    for open_it in (lambda: load_engine(path), lambda: TensorRTRunner.from_engine(path, device="cuda:1")):
        with pytest.raises(ArtifactError, match="version-compatible engine, which runs native code") as info:
            open_it()
        message = str(info.value)
        assert "\n" not in message and "allow_host_code=True" in message
        assert "rebuild it from out/model.fp16.onnx without `version_compat`" in message
        assert "without --version-compat" in flag_words(message, {})  # as `aarm-export predict` says it
    assert records == []  # refused before anything was deserialized or made current
    runner = TensorRTRunner.from_engine(path, device="cuda:1", allow_host_code=True)
    assert runner.engine is engine and runner.device == "cuda:1"
    assert [r for r in records if "data" in r] == [{"data": path.read_bytes(), "host_code": True, "device": 1}]


def test_an_engine_tensorrt_cannot_deserialize_is_an_artifact_error(tmp_path, monkeypatch):
    import fake_tensorrt

    from runtime.tensorrt_engine import load_engine

    fake_tensorrt.install(monkeypatch, None, deserializes=False)
    path = fake_engine(tmp_path)
    with pytest.raises(ArtifactError, match="could not deserialize the engine .host code is off"):
        load_engine(path)
