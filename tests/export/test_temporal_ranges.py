"""The sidecar's `ranges` field (valid sizes of a dynamic K or T), the TensorRT profile built over that range, and
the lint that lets a named K / T through; all on the CPU, without exporting a model (the export side is in
tests/export/test_dynamic_temporal.py)."""

from types import SimpleNamespace

import pytest
from onnx import TensorProto, helper

from aarm.data.preprocessing import Preprocessing
from aarm.errors import AarmError, ConfigError
from export.lint import lint_onnx
from export.tensorrt_build import BuildOptions, build_plan, engine_sidecar, polygraphy_loaders
from runtime.artifact import Sidecar, TensorSpec, validate_sidecar
from runtime.temporal import parse_range

# ------------------------------------------------------------------------------------------ sidecar `ranges`


def sidecar_dict(ranges, shape=("N", "K", 3, 8, 8), segments=3) -> dict:
    prep = Preprocessing(size=8, scale_size=8, segments=segments)
    sc = Sidecar(kind="onnx", stage="export", precision="fp32", model={"name": "resnet18"}, classes=["a", "b"],
                 preprocessing=prep.to_dict(), inputs=[TensorSpec("input", list(shape), layout="NKCHW", ranges=ranges)],
                 outputs=[TensorSpec("scores", ["N", 2], layout="NC")], sha256="0" * 64)
    return sc.to_dict()


def test_sidecar_accepts_a_valid_range():
    validate_sidecar(sidecar_dict({"K": {"min": 1, "opt": 8, "max": 25}}), "m.onnx.json")
    validate_sidecar(sidecar_dict(None, shape=("N", 3, 3, 8, 8)), "m.onnx.json")


@pytest.mark.parametrize(("ranges", "shape", "segments", "message"), [
    ({"K": {"min": 5, "opt": 3, "max": 25}}, None, 3, r"needs 1 <= min <= opt <= max, got 5:3:25"),
    ({"K": {"min": 0, "opt": 3, "max": 25}}, None, 3, r"needs 1 <= min"),
    ({"K": {"min": 1, "opt": 3}}, None, 3, r"must be \{min, opt, max\} integers"),
    ({"K": {"min": 1, "opt": 3, "max": 9, "step": 1}}, None, 3, r"must be \{min, opt, max\} integers"),
    ({"K": {"min": 1, "opt": 3.0, "max": 9}}, None, 3, r"must be \{min, opt, max\} integers"),
    ({"K": [1, 3, 25]}, None, 3, r"must be \{min, opt, max\} integers"),
    ({"T": {"min": 1, "opt": 3, "max": 9}}, None, 3, r"names axis 'T', which is not a dynamic"),
    ({"N": {"min": 1, "opt": 3, "max": 9}}, None, 3, r"names axis 'N'"),
    ({}, None, 3, r"must be null or a non-empty object"),
    ({"K": {"min": 1, "opt": 3, "max": 9}}, ("N", "K", "C", 8, 8), 3, r"gives no range for axis 'C'"),
    ({"K": {"min": 4, "opt": 4, "max": 9}}, None, 3, r"samples K = 3, outside its range 4:4:9"),
])
def test_sidecar_refuses_a_bad_range(ranges, shape, segments, message):
    data = sidecar_dict(ranges, shape=shape or ("N", "K", 3, 8, 8), segments=segments)
    with pytest.raises(AarmError, match=message):
        validate_sidecar(data, "m.onnx.json")


def test_sidecar_refuses_unknown_keys_beside_ranges():
    data = sidecar_dict({"K": {"min": 1, "opt": 3, "max": 9}})
    data["inputs"][0]["range"] = {"K": [1, 9]}
    with pytest.raises(AarmError, match="unknown key"):
        validate_sidecar(data, "m.onnx.json")


# ----------------------------------------------------------------------------------- TensorRT profile on K


def k_sidecar(ranges=None) -> Sidecar:
    data = sidecar_dict(ranges or {"K": {"min": 1, "opt": 3, "max": 25}})
    return Sidecar(**{k: v for k, v in data.items()})


def test_build_profiles_k_over_the_recorded_or_chosen_range(tmp_path):
    path = tmp_path / "m.onnx"
    plan = build_plan(path, k_sidecar(), BuildOptions(batch=(1, 4, 8)))
    assert plan.profiles["input"] == ((1, 1, 3, 8, 8), (4, 3, 3, 8, 8), (8, 25, 3, 8, 8))
    plan = build_plan(path, k_sidecar(), BuildOptions(batch=(1, 4, 8), segments=parse_range("1:8:25", "--segments")))
    assert plan.profiles["input"] == ((1, 1, 3, 8, 8), (4, 8, 3, 8, 8), (8, 25, 3, 8, 8))
    fake_trt = SimpleNamespace(MemoryPoolType=SimpleNamespace(WORKSPACE="WORKSPACE"),
                               HardwareCompatibilityLevel=SimpleNamespace(NONE="NONE"))
    (profile,) = polygraphy_loaders(plan, trt=fake_trt).config.profiles
    shapes = profile["input"]
    assert (shapes.min, shapes.opt, shapes.max) == ((1, 1, 3, 8, 8), (4, 8, 3, 8, 8), (8, 25, 3, 8, 8))
    engine = engine_sidecar(k_sidecar(), plan, tensorrt="11.4.0", gpu="H100", compute_capability="9.0")
    assert engine.inputs[0].shape == ["N", "K", 3, 8, 8]
    assert engine.inputs[0].ranges == {"K": {"min": 1, "opt": 8, "max": 25}}
    validate_sidecar({**engine.to_dict(), "sha256": "0" * 64}, "m.engine.json")  # hashed when written


def test_build_refuses_a_k_range_the_graph_cannot_take(tmp_path):
    path = tmp_path / "m.onnx"
    with pytest.raises(ConfigError, match=r"--segments 1:8:30 leaves the range 1\.\.25"):
        build_plan(path, k_sidecar(), BuildOptions(segments=(1, 8, 30)))
    with pytest.raises(ConfigError, match="leaves out K = 3"):
        build_plan(path, k_sidecar(), BuildOptions(segments=(4, 8, 25)))
    with pytest.raises(ConfigError, match="--frames does not apply"):
        build_plan(path, k_sidecar(), BuildOptions(frames=(1, 8, 16)))
    fixed = Sidecar(**sidecar_dict(None, shape=("N", 3, 3, 8, 8)))
    with pytest.raises(ConfigError, match="its K is fixed"):
        build_plan(path, fixed, BuildOptions(segments=(1, 8, 25)))


def test_lint_accepts_a_named_k_or_t_of_a_clip_input_only():
    def errors(shape: list) -> list:
        vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("x", "y")]
        graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "g", vi[:1], vi[1:])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        return [f for f in lint_onnx(model) if f.rule == "dynamic-shape" and f.severity == "error"]

    assert errors(["N", "K", 3, 8, 8]) == [] and errors(["N", 3, "T", 8, 8]) == []
    assert len(errors(["N", "T", 3, 8, 8])) == 1 and len(errors(["N", 3, "K", 8, 8])) == 1
    assert len(errors(["N", "K", 8, 8])) == 1  # not a clip input
