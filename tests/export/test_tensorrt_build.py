"""TensorRT engine build: plan, profiles and Polygraphy loader objects on the CPU; the real build where
TensorRT and a GPU exist."""

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from aarm.data.preprocessing import Preprocessing
from aarm.errors import AarmError, BackendUnavailable, ConfigError
from export.tensorrt_build import (
    DEFAULT_BATCH,
    BuildOptions,
    build_engine,
    build_plan,
    default_engine_path,
    engine_sidecar,
    parse_batch,
    parse_size,
    polygraphy_loaders,
)
from runtime.artifact import Sidecar, TensorSpec, read_sidecar, write_sidecar
from runtime.errors import ArtifactError

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None
CONFIG = {
    "name": "resnet18",
    "num_classes": 5,
    "attention": "aarm",
    "in_channels": 3,
    "options": {"vcm": True, "segments": 2},
}
CLASSES = ["a", "b", "c", "d", "e"]


def tiny_clip_model(batch="N") -> onnx.ModelProto:
    """(N, K=2, C=3, 8, 8) clips -> mean over K -> Conv -> ReLU -> global pool -> Gemm -> (N, 5) scores."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(a, n)
        for n, a in [
            ("w", rng.standard_normal((4, 3, 3, 3)).astype(np.float32)),
            ("b", np.zeros(4, np.float32)),
            ("fc", rng.standard_normal((4, 5)).astype(np.float32)),
            ("fcb", np.zeros(5, np.float32)),
            ("flat", np.array([-1, 3, 8, 8], np.int64)),
            ("back", np.array([-1, 2, 4], np.int64)),
        ]
    ]
    nodes = [
        helper.make_node("Reshape", ["clips", "flat"], ["frames"], name="tsn_flatten"),
        helper.make_node("Conv", ["frames", "w", "b"], ["conv"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
        helper.make_node("GlobalAveragePool", ["relu"], ["pool"], name="gap"),
        helper.make_node("Reshape", ["pool", "back"], ["per_segment"], name="tsn_unflatten"),
        helper.make_node(
            "ReduceMean", ["per_segment"], ["consensus"], axes=[1], keepdims=0, name="consensus"
        ),
        helper.make_node("Gemm", ["consensus", "fc", "fcb"], ["scores"], name="fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("clips", TensorProto.FLOAT, [batch, 2, 3, 8, 8])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, 5])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def onnx_sidecar(batch="N", precision="fp32") -> Sidecar:
    pp = Preprocessing.for_model(CONFIG, size=8)
    return Sidecar(
        kind="onnx",
        stage="export",
        precision=precision,
        model=CONFIG,
        classes=CLASSES,
        preprocessing=pp.to_dict(),
        inputs=[TensorSpec("clips", [batch, 2, 3, 8, 8], "float32", "NKCHW")],
        outputs=[TensorSpec("scores", [batch, 5], "float32", "NC")],
        opset=17,
    )


def write_tiny(tmp_path: Path, batch="N", name="model.onnx") -> Path:
    path = tmp_path / name
    onnx.save(tiny_clip_model(batch), str(path))
    write_sidecar(path, onnx_sidecar(batch))
    return path


FAKE_TRT = SimpleNamespace(
    MemoryPoolType=SimpleNamespace(WORKSPACE="WORKSPACE"),
    HardwareCompatibilityLevel=SimpleNamespace(
        NONE="NONE", AMPERE_PLUS="AMPERE_PLUS", SAME_COMPUTE_CAPABILITY="SAME_CC"
    ),
    __version__="11.4.0.106",
)


def test_parse_size_and_batch():
    assert parse_size("4G") == 4 << 30 and parse_size("512MiB") == 512 << 20 and parse_size("1024") == 1024
    assert parse_size("1.5g") == 3 << 29
    with pytest.raises(ConfigError):
        parse_size("lots")
    assert parse_batch("1:8:32") == (1, 8, 32) and parse_batch("4") == (4, 4, 4)
    for bad in ("8:1:32", "0:1:2", "1:2", "a:b:c"):
        with pytest.raises(ConfigError):
            parse_batch(bad)


def test_default_engine_path():
    assert default_engine_path(Path("out/model.onnx"), "fp32") == Path("out/model.fp32.engine")
    assert default_engine_path(Path("out/model.opt.fp16.onnx"), "fp16") == Path("out/model.fp16.engine")
    assert default_engine_path(Path("r50.int8.onnx"), "int8") == Path("r50.int8.engine")


def test_plan_profiles_default_and_explicit(tmp_path):
    onnx_path = tmp_path / "model.fp16.onnx"
    plan = build_plan(onnx_path, onnx_sidecar(precision="fp16"), BuildOptions())
    lo, opt, hi = DEFAULT_BATCH
    assert plan.profiles == {"clips": ((lo, 2, 3, 8, 8), (opt, 2, 3, 8, 8), (hi, 2, 3, 8, 8))}
    assert plan.engine_path == tmp_path / "model.fp16.engine" and plan.precision == "fp16"
    assert plan.strongly_typed and plan.hardware_compat == "none" and not plan.version_compat
    assert plan.workspace == 4 << 30 and plan.notes
    plan = build_plan(
        onnx_path,
        onnx_sidecar(),
        BuildOptions(
            batch=(2, 4, 16),
            workspace=1 << 30,
            timing_cache=tmp_path / "t.cache",
            hardware_compat="ampere+",
            version_compat=True,
            output=tmp_path / "x.engine",
        ),
    )
    assert plan.profiles["clips"] == ((2, 2, 3, 8, 8), (4, 2, 3, 8, 8), (16, 2, 3, 8, 8))
    assert plan.engine_path == tmp_path / "x.engine" and plan.timing_cache == tmp_path / "t.cache"
    assert plan.to_dict()["profiles"]["clips"]["max"] == [16, 2, 3, 8, 8]


def test_plan_fixed_batch_and_errors(tmp_path):
    path = tmp_path / "m.onnx"
    plan = build_plan(path, onnx_sidecar(batch=1), BuildOptions())
    assert plan.profiles["clips"] == ((1, 2, 3, 8, 8),) * 3
    with pytest.raises(ConfigError, match="fixed batch"):
        build_plan(path, onnx_sidecar(batch=1), BuildOptions(batch=(1, 8, 32)))
    dynamic_t = onnx_sidecar()
    dynamic_t.inputs[0].shape = ["N", 3, "T", 8, 8]
    with pytest.raises(ArtifactError, match="dynamic axis 2"):
        build_plan(path, dynamic_t, BuildOptions())
    with pytest.raises(ConfigError, match="hardware-compat"):
        build_plan(path, onnx_sidecar(), BuildOptions(hardware_compat="turing+"))
    engine = onnx_sidecar().derive(kind="engine", stage="build")
    with pytest.raises(ArtifactError, match="ONNX"):
        build_plan(path, engine, BuildOptions())


def test_polygraphy_loaders_are_lazy_and_configured(tmp_path, monkeypatch):
    plan = build_plan(
        tmp_path / "model.onnx",
        onnx_sidecar(),
        BuildOptions(
            batch=(1, 4, 8),
            workspace=2 << 30,
            timing_cache=tmp_path / "timing.cache",
            hardware_compat="ampere+",
            version_compat=True,
        ),
    )
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # any `import tensorrt` now raises ImportError
    loaders = polygraphy_loaders(plan, trt=FAKE_TRT, engine_path=tmp_path / "tmp.engine")
    from polygraphy.backend.trt import CreateConfig, EngineFromNetwork, NetworkFromOnnxPath, SaveEngine

    assert isinstance(loaders.network, NetworkFromOnnxPath)
    assert loaders.network.path == str(tmp_path / "model.onnx") and loaders.network.strongly_typed is True
    config = loaders.config
    assert isinstance(config, CreateConfig)
    (profile,) = config.profiles
    assert list(profile) == ["clips"]
    shapes = profile["clips"]
    assert (shapes.min, shapes.opt, shapes.max) == ((1, 2, 3, 8, 8), (4, 2, 3, 8, 8), (8, 2, 3, 8, 8))
    assert config.memory_pool_limits == {"WORKSPACE": 2 << 30}
    assert config.timing_cache_path == str(tmp_path / "timing.cache")
    assert config.hardware_compatibility_level == "AMPERE_PLUS" and config.version_compatible is True
    assert not (config.fp16 or config.int8 or config.bf16)  # precision comes from the graph (strongly typed)
    assert isinstance(loaders.engine, EngineFromNetwork)
    assert loaders.engine.timing_cache_path == str(tmp_path / "timing.cache")
    assert isinstance(loaders.save, SaveEngine) and loaders.save.path == str(tmp_path / "tmp.engine")
    # Calling the chain is what needs TensorRT.
    from polygraphy.exception import PolygraphyException

    with pytest.raises((PolygraphyException, ImportError)):
        loaders.network()


def test_polygraphy_loaders_defaults_and_same_cc(tmp_path):
    plan = build_plan(
        tmp_path / "m.onnx", onnx_sidecar(), BuildOptions(workspace=None, hardware_compat="same-cc")
    )
    loaders = polygraphy_loaders(plan, trt=FAKE_TRT)
    assert loaders.config.memory_pool_limits is None and loaders.config.timing_cache_path is None
    assert loaders.config.hardware_compatibility_level == "SAME_CC" and not loaders.config.version_compatible
    assert loaders.save.path == str(tmp_path / "m.fp32.engine")
    old_trt = SimpleNamespace(
        MemoryPoolType=FAKE_TRT.MemoryPoolType,
        HardwareCompatibilityLevel=SimpleNamespace(NONE=0, AMPERE_PLUS=1),
    )
    with pytest.raises(ConfigError, match="SAME_COMPUTE_CAPABILITY"):
        polygraphy_loaders(plan, trt=old_trt)


def test_engine_sidecar_records_target(tmp_path):
    onnx_sc = onnx_sidecar(precision="int8")
    plan = build_plan(tmp_path / "m.int8.onnx", onnx_sc, BuildOptions(batch=(1, 2, 4)))
    sc = engine_sidecar(
        onnx_sc, plan, tensorrt="10.3.0.30", gpu="Orin", compute_capability="8.7", seconds=12.34
    )
    assert (sc.kind, sc.stage, sc.precision, sc.classes) == ("engine", "build", "int8", CLASSES)
    info = sc.extra["tensorrt"]
    assert (info["version"], info["gpu"], info["compute_capability"]) == ("10.3.0.30", "Orin", "8.7")
    assert info["profile"]["clips"]["max"] == [4, 2, 3, 8, 8] and info["strongly_typed"] is True
    assert sc.inputs[0].shape == ["N", 2, 3, 8, 8] and "Orin" in sc.device


@pytest.mark.skipif(HAVE_TRT, reason="checks the path taken where TensorRT is missing")
def test_build_without_tensorrt_raises_backend_unavailable(tmp_path):
    path = write_tiny(tmp_path)
    with pytest.raises(BackendUnavailable, match="pip install tensorrt"):
        build_engine(path, BuildOptions())
    assert not (tmp_path / "model.fp32.engine").exists()


@pytest.mark.skipif(HAVE_TRT, reason="checks the path taken where TensorRT is missing")
def test_cli_build_without_tensorrt_prints_one_line(tmp_path):
    path = write_tiny(tmp_path)
    exe = Path(sys.executable).parent / "aarm-export"
    result = subprocess.run(
        [str(exe), "build", str(path), "--batch", "1:2:4"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "pip install tensorrt" in lines[0], (
        result.stderr
    )
    assert "Traceback" not in result.stderr


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_real_build_runs_like_onnxruntime(tmp_path):
    pytest.importorskip("tensorrt", reason="needs TensorRT's Python bindings")
    import onnxruntime as ort

    from runtime.backends import open_runner
    from runtime.tensorrt_engine import current_gpu

    try:
        current_gpu()
    except BackendUnavailable as exc:
        pytest.skip(str(exc))
    path = write_tiny(tmp_path)
    cache = tmp_path / "timing.cache"
    engine, sidecar = build_engine(path, BuildOptions(batch=(1, 2, 4), workspace=1 << 30, timing_cache=cache))
    assert engine.is_file() and cache.is_file()
    assert read_sidecar(engine).extra["tensorrt"]["version"] == sidecar.extra["tensorrt"]["version"]
    clips = np.random.default_rng(1).standard_normal((3, 2, 3, 8, 8)).astype(np.float32)
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"clips": clips}
    )[0]
    with open_runner(engine) as runner:
        got = runner.infer({"clips": clips})["scores"]
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-3, atol=1e-3)
    with pytest.raises(AarmError, match="exists"):
        build_engine(path, BuildOptions(batch=(1, 2, 4)))


# -- Polygraphy version: TensorRT 11 needs one that does not set EXPLICIT_BATCH ----------------------------
def test_old_polygraphy_is_refused(tmp_path, monkeypatch):
    from runtime.tensorrt_engine import MIN_POLYGRAPHY, require_polygraphy

    assert MIN_POLYGRAPHY == "0.49.9"
    assert require_polygraphy("0.49.9") == "0.49.9" and require_polygraphy("0.53.6") == "0.53.6"
    for old in ("0.49.0", "0.48.1", "0.47.1"):
        with pytest.raises(BackendUnavailable, match=f"Polygraphy {old} is too old.*polygraphy>=0.49.9"):
            require_polygraphy(old)
    plan = build_plan(tmp_path / "m.onnx", onnx_sidecar(), BuildOptions())
    monkeypatch.setitem(sys.modules, "polygraphy", SimpleNamespace(__version__="0.49.0"))
    with pytest.raises(BackendUnavailable, match="EXPLICIT_BATCH") as info:
        polygraphy_loaders(plan, trt=FAKE_TRT)
    assert "\n" not in str(info.value)


def test_cli_build_refuses_old_polygraphy_in_one_line(tmp_path):
    path = write_tiny(tmp_path)
    fake = tmp_path / "fake" / "polygraphy"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('__version__ = "0.49.0"\n')
    exe = Path(sys.executable).parent / "aarm-export"
    env = {**__import__("os").environ, "PYTHONPATH": str(fake.parent)}
    result = subprocess.run([str(exe), "build", str(path)], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Polygraphy 0.49.0 is too old" in lines[0], result.stderr
    assert not (tmp_path / "model.fp32.engine").exists()


def test_pyproject_pins_the_polygraphy_the_build_accepts():
    import tomllib

    from runtime.tensorrt_engine import MIN_POLYGRAPHY

    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]
    pins = [r for reqs in project["optional-dependencies"].values() for r in reqs if r.startswith("polygraphy")]
    assert len(pins) >= 2 and all(r == f"polygraphy>={MIN_POLYGRAPHY}" for r in pins), pins


# -- calibration tables: TensorRT 10's calibrators only, named for the method ---------------------------
def test_tensorrt_table_names_the_calibrator_of_its_method(tmp_path):
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData
    from tensorrt_table import table_scales

    from calibration.cache import write_tensorrt_table

    data = {"x": TensorData(lowest=np.float32(-1.27), highest=np.float32(0.5))}
    headers = {}
    for method in (CalibrationMethod.MinMax, CalibrationMethod.Entropy, CalibrationMethod.Percentile):
        table = write_tensorrt_table(TensorsData(method, data), tmp_path / f"{method.name}.cache")
        headers[method.name] = table.read_text().splitlines()[0]
        assert table_scales(table)["x"] == pytest.approx(0.01)
    assert headers == {"MinMax": "TRT-100300-MinMaxCalibration", "Entropy": "TRT-100300-EntropyCalibration2",
                       "Percentile": "TRT-100300-MinMaxCalibration"}
    table = write_tensorrt_table(TensorsData(CalibrationMethod.Entropy, data), tmp_path / "t.cache", version=100800)
    assert table.read_text().startswith("TRT-100800-EntropyCalibration2\n")
    with pytest.raises(ConfigError, match="TensorRT 11"):
        write_tensorrt_table(TensorsData(CalibrationMethod.Entropy, data), tmp_path / "u.cache", version=110400)
    with pytest.raises(ConfigError, match="Distribution"):
        write_tensorrt_table(TensorsData(CalibrationMethod.Distribution, data), tmp_path / "v.cache")
    assert not (tmp_path / "u.cache").exists() and not (tmp_path / "v.cache").exists()
