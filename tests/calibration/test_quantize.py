"""INT8 Q/DQ graphs: shaped per target, exclusions honoured, calibration cached, sensitive layers kept float."""

import json
import shutil
from unittest import mock

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, numpy_helper
from tensorrt_table import table_scales

import calibration.quantize as quantize_module
from aarm.attention import AARMBlock
from aarm.errors import AarmError, DataError
from calibration.cache import cache_key, load_ranges, save_ranges, write_tensorrt_table
from calibration.quantize import CalibrationConfig, calibrate
from calibration.sensitivity import QDQ_OPS, float_variant, graph_scores, layer_groups
from runtime.artifact import read_sidecar, write_sidecar
from runtime.errors import ArtifactError


def _dequantized_inputs(model: onnx.ModelProto, node_name: str) -> list[str]:
    """Inputs of `node_name` that come from a DequantizeLinear (a quantized node has some, a float one none)."""
    dq = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    node = next(n for n in model.graph.node if n.name == node_name)
    return [i for i in node.input if i in dq]


def calibrate_with(model, out, *, graph_passes=None, force=False, **options):
    """`calibrate` with `options` as its CalibrationConfig."""
    return calibrate(model, out, CalibrationConfig(**options), graph_passes=graph_passes, force=force)


@pytest.fixture(scope="module")
def cpu_int8(tiny, videos, tmp_path_factory):
    """The tiny AARM graph for onnxruntime CPU, with the classifier kept in float on request."""
    out = tmp_path_factory.mktemp("cpu") / "model.int8.onnx"
    return calibrate_with(tiny.onnx, out, data=videos, clips=5, method="minmax", target="cpu", max_drop=None,
                     exclude=["backbone.fc"], preprocess=False, eval_clips=5)


def test_cpu_target_has_uint8_activations_and_int8_weights(cpu_int8, tiny):
    model = onnx.load(str(cpu_int8.output))
    inits = {t.name: t for t in model.graph.initializer}
    q_types = {numpy_helper.to_array(inits[n.input[2]]).dtype for n in model.graph.node
               if n.op_type == "QuantizeLinear"}
    assert q_types == {np.dtype(np.uint8)}  # every activation: unsigned 8-bit
    conv_weights = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    weight_types = {inits[n.input[0]].data_type for n in model.graph.node
                    if n.op_type == "DequantizeLinear" and n.input[0] in inits and n.output[0] in conv_weights}
    assert weight_types == {TensorProto.INT8}  # conv weights: signed int8 (per channel)
    x = np.random.default_rng(0).standard_normal((2, *tiny.preprocessing.input_shape(1)[1:]), dtype=np.float32)
    assert graph_scores(cpu_int8.output, x).shape == (2, len(tiny.classes))  # runs on onnxruntime CPU

    sidecar = read_sidecar(cpu_int8.output)  # verifies the sha256 too
    assert (sidecar.precision, sidecar.stage, sidecar.parent) == ("int8", "calibrate", str(tiny.onnx))
    int8 = sidecar.extra["int8"]
    assert (int8["target"], int8["method"], int8["clips"], int8["activation_type"]) == ("cpu", "minmax", 5, "uint8")
    assert int8["accuracy"]["clips"] == 5 and int8["accuracy"]["max_drop"] is None


def test_int8_graph_imports_only_the_domains_it_uses(probe, tmp_path):
    """onnxruntime's quantizer imported every domain registered in the process: after a session had loaded the
    AARM kernels, ('com.aarm', 1000) too, so the INT8 graph depended on what ran before and read as a kernel graph
    (the pipeline's Triton stage left it out)."""
    import onnxruntime as ort

    from aarm.errors import BackendUnavailable
    from export.kernels import custom_op_library
    from export.verify import uses_custom_ops
    from runtime.graph_precision import all_nodes

    try:
        options = ort.SessionOptions()
        options.register_custom_ops_library(str(custom_op_library()))  # com.aarm now registered in this process
    except BackendUnavailable as exc:
        pytest.skip(str(exc))
    ort.InferenceSession(str(probe.onnx), options, providers=["CPUExecutionProvider"])
    out = calibrate_with(probe.onnx, tmp_path / "probe.int8.onnx", data=probe.data, clips=2, method="minmax",
                         target="cpu", max_drop=None, eval_clips=2).output
    model = onnx.load(str(out))
    used = {n.domain for n in all_nodes(model)} | {""}
    assert {o.domain for o in model.opset_import} <= used
    assert not uses_custom_ops(out)


def test_exclusions_stay_float(cpu_int8):
    model = onnx.load(str(cpu_int8.output))
    excluded = {e["node"]: e["reason"] for e in cpu_int8.report.to_json()["excluded"]}
    by_op = {n.name: n.op_type for n in model.graph.node}
    requested = [n for n, r in excluded.items() if r.startswith("requested")]
    assert [by_op[n] for n in requested] == ["Gemm"]  # backbone.fc, not the VCM's fc
    assert {excluded[n] for n in requested} == {"requested (`exclude` backbone.fc)"}  # the parameter, not a flag
    slow = [n for n, r in excluded.items() if "slower in int8" in r]
    assert slow == []  # only grouped convs are (the fusion exports as sums); the one-channel STAM convs are int8
    for node in excluded:
        assert _dequantized_inputs(model, node) == [], f"{node} was excluded but reads a DequantizeLinear"
    # ... and they run in float in the session onnxruntime optimises (its QDQ fusions could quantize them)
    session = cpu_int8.report.to_json()["session"]
    assert session["checked"] and session["int8_kernels"] > 0
    assert {e["in_session"] for e in cpu_int8.report.to_json()["excluded"]} == {"float"}
    assert sorted(session["float"]) == sorted(excluded)
    vcm = next(n for n in model.graph.node if n.op_type == "Gemm" and n.name not in excluded)
    assert _dequantized_inputs(model, vcm.name)  # the rest is quantized


def _legacy_forward(self: AARMBlock, x: torch.Tensor) -> torch.Tensor:
    """AARM as exported before the fusion became weighted sums: an interleaving stack and a grouped 1x1 conv."""
    m_ch, m_st = self.cam(x) * x, self.stam(x) * x
    return self.fuse.conv(torch.stack((m_ch, m_st), dim=2).flatten(1, 2))


@pytest.fixture(scope="module")
def legacy(tiny, tmp_path_factory):
    """The tiny AARM model exported with the grouped channel-wise fusion conv, as `aarm-export export` made them."""
    from export.onnx_export import export_onnx

    path = tmp_path_factory.mktemp("legacy") / "legacy.onnx"
    with mock.patch.object(AARMBlock, "forward", _legacy_forward):
        export_onnx(tiny.model, path, classes=tiny.classes, preprocessing=tiny.preprocessing, trained=True)
    return path


def test_kept_in_float_is_checked_in_the_optimised_session(legacy, tiny, videos, tmp_path):
    """The excluded grouped fusion convs of an older export read their input through a Reshape of a dequantized
    tensor; onnxruntime would move the DequantizeLinear past the Reshape and run them as QLinearConv, so
    calibrate feeds them the float tensor instead, and the session runs them in float (traced there); with
    the standard-op passes first (what the CLI does) the grouped convs are gone altogether."""
    from export.passes import run_passes

    grouped = [n.name for n in onnx.load(str(legacy)).graph.node for a in n.attribute if a.name == "group" and a.i > 1]
    assert len(grouped) == 8
    common = dict(data=videos, clips=4, method="minmax", target="cpu", max_drop=None)
    kept = calibrate_with(legacy, tmp_path / "a.onnx", **common).report.to_json()
    assert sorted(kept["session"]["float"]) == sorted(grouped) and kept["session"]["checked"]
    assert {e["in_session"] for e in kept["excluded"]} == {"float"}
    result = calibrate_with(legacy, tmp_path / "b.onnx", graph_passes=run_passes, **common)
    report = result.report.to_json()
    assert "rewrite_channel_fusion" in report["quantization"]["graph_passes"]
    assert not any(a.name == "group" and a.i > 1 for n in onnx.load(str(result.output)).graph.node
                   for a in n.attribute)
    assert report["excluded"] == [] and report["session"]["float"] == []  # nothing left that runs slower in int8
    assert report["session"]["checked"] and report["session"]["int8_kernels"] > 0
    x = np.random.default_rng(0).standard_normal((4, *tiny.preprocessing.input_shape(1)[1:]), dtype=np.float32)
    np.testing.assert_allclose(graph_scores(legacy, x), graph_scores(tiny.onnx, x), rtol=0, atol=1e-5)


def test_unknown_exclusion_is_an_error(probe, tmp_path):
    with pytest.raises(ArtifactError, match="`exclude` '/nowhere' matches no node"):
        calibrate_with(probe.onnx, tmp_path / "x.onnx", data=probe.data, clips=2, max_drop=None, exclude=["/nowhere"],
                  preprocess=False)


def test_restoring_every_layer_gives_back_the_float_graph(cpu_int8, tiny):
    qmodel, fmodel = onnx.load(str(cpu_int8.output)), onnx.load(str(tiny.onnx))
    groups = layer_groups(qmodel)
    roles = {g.role for g in groups}
    assert {"first conv", "AARM channel attention (CAM)", "VCM (score recalibration)", "backbone conv"} <= roles
    # the cpu target quantizes the float graph with its pools and biases rewritten (the graph the INT8 one comes from)
    source = quantize_module.target_graph(fmodel, "cpu")[0]
    variant = float_variant(qmodel, source, [n for g in groups for n in g.nodes])
    assert not [n for n in variant.graph.node if n.op_type in QDQ_OPS]
    x = np.random.default_rng(1).standard_normal((2, *tiny.preprocessing.input_shape(1)[1:]), dtype=np.float32)
    np.testing.assert_allclose(graph_scores(variant, x), graph_scores(fmodel, x), rtol=1e-5, atol=1e-6)


def test_second_run_reads_the_cache_instead_of_calibrating(probe, tmp_path, monkeypatch):
    calls = []
    real = quantize_module.create_calibrator
    monkeypatch.setattr(quantize_module, "create_calibrator", lambda *a, **k: calls.append(a) or real(*a, **k))
    cache = tmp_path / "calibration.json"
    common = dict(data=probe.data, clips=4, max_drop=None, cache=cache, preprocess=False, target="tensorrt")
    first = calibrate_with(probe.onnx, tmp_path / "a.onnx", method="entropy", **common)
    assert len(calls) == 1 and first.report.to_json()["calibration"]["cache"]["hit"] is False
    second = calibrate_with(probe.onnx, tmp_path / "b.onnx", method="entropy", **common)
    assert len(calls) == 1 and second.report.to_json()["calibration"]["cache"]["hit"] is True
    assert onnx.load(str(tmp_path / "a.onnx")).graph == onnx.load(str(tmp_path / "b.onnx")).graph  # same ranges
    assert (tmp_path / "a.calibration.cache").read_text() == (tmp_path / "b.calibration.cache").read_text()
    calibrate_with(probe.onnx, tmp_path / "c.onnx", method="minmax", **common)  # another method: another entry
    assert len(calls) == 2
    assert len(json.loads(cache.read_text())["entries"]) == 2


def test_cache_entries_are_keyed_and_the_tensorrt_table_holds_scales(tmp_path):
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData

    ranges = TensorsData(CalibrationMethod.Entropy, {
        "a": TensorData(lowest=np.float32(-2.5), highest=np.float32(1.0)),
        "b": TensorData(lowest=np.float32(0.0), highest=np.float32(6.35)),
    })
    key = cache_key("graph-sha", "data-id", "entropy")
    assert key != cache_key("graph-sha", "other-data", "entropy") != cache_key("graph-sha", "data-id", "minmax")
    path = save_ranges(tmp_path / "c.json", key, ranges)
    assert load_ranges(path, cache_key("graph-sha", "other-data", "entropy")) is None
    loaded = load_ranges(path, key)
    assert loaded.calibration_method == CalibrationMethod.Entropy
    assert float(loaded["a"].lowest) == -2.5 and float(loaded["b"].highest) == pytest.approx(6.35)
    table = write_tensorrt_table(ranges, tmp_path / "calibration.cache")
    lines = table.read_text().splitlines()
    assert lines[0] == "TRT-100300-EntropyCalibration2" and lines[1].startswith("a: ")
    scales = table_scales(table)
    assert scales["a"] == pytest.approx(2.5 / 127) and scales["b"] == pytest.approx(6.35 / 127)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ArtifactError, match="not an aarm calibration cache"):
        load_ranges(tmp_path / "bad.json", key)


def test_search_keeps_the_sensitive_layers_in_float(probe, tmp_path):
    result = calibrate_with(probe.onnx, tmp_path / "probe.int8.onnx", data=probe.data, clips=10, method="minmax",
                       target="tensorrt", max_drop=1.0, preprocess=False)
    report = result.report.to_json()
    first = report["search"][0]
    assert first["graph"] == "quantized" and first["float_groups"] == [] and first["drop"] > 1.0
    # The conv that writes the stretched tensor (its Relu re-quantizes it) and the conv that reads it: each
    # quantized alone ruins the scores, the classifier alone does not.
    ranking = [s["group"] for s in report["sensitivity"]]
    assert set(ranking[:2]) == {"conv1", "conv2"} and ranking[2] == "fc"  # module paths (the dynamo exporter's)
    assert report["sensitivity"][2]["error"] < report["sensitivity"][1]["error"] / 10
    assert sorted(report["float_groups"]) == ["conv1", "conv2"]
    assert report["accuracy"]["within_budget"] and report["accuracy"]["drop"] <= 1.0
    assert report["search"][-1]["graph"] == "quantized"  # the budget is checked on a real quantization
    excluded = {e["node"]: e for e in report["excluded"]}
    conv2 = next(n for n, e in excluded.items() if e["group"] == "conv2" and n.startswith("node_conv2d"))
    assert "sensitivity rank" in excluded[conv2]["reason"]
    model = onnx.load(str(result.output))
    for node in excluded:
        assert _dequantized_inputs(model, node) == []
    (fc,) = [n.name for n in model.graph.node if n.op_type == "Gemm"]
    assert _dequantized_inputs(model, fc)  # the classifier stays quantized
    assert read_sidecar(result.output).extra["int8"]["excluded"] == report["excluded"]
    assert json.loads(result.report_path.read_text())["float_groups"] == report["float_groups"]


def test_mismatched_or_empty_inputs_are_clear_errors(tiny, probe, videos, tmp_path):
    graph = shutil.copy(tiny.onnx, tmp_path / "model.onnx")
    sidecar = read_sidecar(tiny.onnx)
    sidecar.preprocessing = {**sidecar.preprocessing, "size": 48, "scale_size": 55}
    write_sidecar(graph, sidecar)
    with pytest.raises(ArtifactError, match="does not describe this graph"):
        calibrate_with(graph, tmp_path / "a.onnx", data=videos, max_drop=None)

    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        calibrate_with(tiny.onnx, tmp_path / "b.onnx", data=tmp_path / "empty", max_drop=None)
    with pytest.raises(DataError, match=">= 1"):
        calibrate_with(tiny.onnx, tmp_path / "b.onnx", data=videos, clips=0, max_drop=None)

    other = shutil.copy(probe.onnx, tmp_path / "other.onnx")
    sidecar = read_sidecar(probe.onnx)
    sidecar.classes = [f"class{i}" for i in range(len(sidecar.classes))]
    write_sidecar(other, sidecar)
    with pytest.raises(DataError, match="classes differ"):
        calibrate_with(other, tmp_path / "c.onnx", data=probe.data, max_drop=None)

    with pytest.raises(DataError, match="needs labelled held-out clips"):
        unlabelled = tmp_path / "flat"
        unlabelled.mkdir()
        for video in sorted((videos / "videos").rglob("*.*"))[:2]:
            shutil.copy(video, unlabelled / video.name)
        calibrate_with(tiny.onnx, tmp_path / "d.onnx", data=unlabelled, max_drop=1.0)


def test_refuses_to_overwrite_or_to_quantize_twice(cpu_int8, probe, tmp_path):
    (tmp_path / "taken.onnx").write_bytes(b"")
    with pytest.raises(AarmError, match="exists; pass `force` to overwrite it"):
        calibrate_with(probe.onnx, tmp_path / "taken.onnx", data=probe.data, max_drop=None)
    with pytest.raises(ArtifactError, match="float32 ONNX graph"):
        calibrate_with(cpu_int8.output, tmp_path / "again.onnx", data=probe.data, max_drop=None)


def test_percentile_calibration_survives_nearly_constant_tensors(tmp_path):
    """A gate stuck near one value (here 0.7 +- 1e-7) is binned over [0, max] instead of failing in numpy."""
    from onnx import helper

    from calibration.quantize import compute_ranges

    w = numpy_helper.from_array(np.full((4, 4), 1e-7, dtype=np.float32), "w")
    b = numpy_helper.from_array(np.full((4,), 0.7, dtype=np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="gemm"), helper.make_node("Relu", ["y"], ["z"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 4])], [w, b])
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))

    class Reader:
        def __init__(self):
            self.batches = [{"x": np.random.default_rng(i).standard_normal((8, 4), dtype=np.float32)} for i in range(3)]
            self.i, self.end = 0, 3

        def __len__(self):
            return 3

        def set_range(self, start, end):
            self.i, self.end = start, min(end, 3)

        def rewind(self):
            self.set_range(0, 3)

        def get_next(self):
            self.i += 1
            return self.batches[self.i - 1] if self.i <= self.end else None

    ranges = compute_ranges(path, Reader(), "percentile", workdir=tmp_path, chunk=1)
    lo, hi = float(ranges["y"].lowest), float(ranges["y"].highest)
    assert 0.69 < hi <= 0.71 and lo <= hi


def test_the_budget_counts_lost_clips_that_lucky_flips_cannot_offset():
    from calibration.sensitivity import Comparison

    labels = np.array([0, 1, 2, 0])
    reference = np.eye(3)[[0, 1, 2, 1]]  # float: right, right, right, wrong
    int8 = np.eye(3)[[0, 2, 2, 0]]  # breaks clip 1, fixes clip 3 by luck: same accuracy
    c = Comparison.of(int8, reference, labels)
    assert c.top1 == Comparison.of(reference, reference, labels).top1 == 75.0
    assert c.lost == 25.0 and c.agreement == 50.0


def test_the_float_artifact_is_read_and_hashed_once(probe, tmp_path, monkeypatch):
    """calibrate verifies the model's sha256 once (read_sidecar) and reuses it for the cache key and the child's
    parent hash; it parses the model file once (the CLI's path: graph passes, then pre-processing), and each graph
    it writes once (the INT8 graph is scored from the model quantize_graph read back, not from its file)."""
    import calibration.reader
    import runtime.artifact
    import runtime.backends.onnxruntime_backend
    from export.passes import run_passes

    model = str(probe.onnx)
    hashed, loaded = [], []
    real_sha, real_load = runtime.artifact.file_sha256, quantize_module.load_onnx
    monkeypatch.setattr(runtime.artifact, "file_sha256", lambda p: hashed.append(str(p)) or real_sha(p))
    for module in (quantize_module, calibration.reader, runtime.backends.onnxruntime_backend):
        monkeypatch.setattr(module, "load_onnx", lambda p, **k: loaded.append(str(p)) or real_load(p, **k))
    result = calibrate_with(probe.onnx, tmp_path / "x.onnx", data=probe.data, clips=2, max_drop=None,
                            cache=tmp_path / "cache.json", graph_passes=run_passes)
    assert hashed.count(model) == 1 and loaded.count(model) == 1
    assert any(p.endswith("int8-0.onnx") for p in loaded) and len(set(loaded)) == len(loaded), loaded
    assert result.sidecar.parent_sha256 == read_sidecar(probe.onnx).sha256 == real_sha(probe.onnx)
    meta = next(iter(json.loads((tmp_path / "cache.json").read_text())["entries"].values()))["meta"]
    assert meta["graph_sha256"] == result.sidecar.parent_sha256


def _layout(value):
    """Keys of every object, in order, down through lists (their first item)."""
    if isinstance(value, dict):
        return {k: _layout(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_layout(value[0])] if value else []
    return type(value).__name__


def test_report_file_keeps_its_json_layout(cpu_int8):
    """The typed report writes the `<stem>.calibration.json` that calibrate wrote when the report was a dict."""
    written = json.loads(cpu_int8.report_path.read_text())
    assert written == json.loads(json.dumps(cpu_int8.report.to_json()))
    accuracy = ["clips", "data", "fp32_top1", "int8_top1", "drop", "lost", "agreement", "error", "max_drop",
                "points_per_clip", "within_budget", "overlap_with_calibration"]
    expected = {
        "model": "str", "output": "str", "target": "str", "target_description": "str", "method": "str",
        "quantization": {"format": "str", "activation_type": "str", "weight_type": "str", "per_channel": "bool",
                         "reduce_range": "bool", "extra_options": {"WeightSymmetric": "bool"},
                         "preprocessed": "bool", "graph_passes": [], "quantized_nodes": "int", "qdq_nodes": "int"},
        "calibration": {"data": "str", "clips": "int", "seed": "int", "batch_size": "int",
                        "cache": {"path": "NoneType", "key": "str", "hit": "bool"}, "calibrator_options": {}},
        "accuracy": list(accuracy), "budget_note": "NoneType",
        "excluded": [{"node": "str", "group": "NoneType", "reason": "str", "in_session": "str"}],
        "session": ["checked", "optimization", "float", "unknown", "int8_kernels", "ops"],
        "float_groups": [], "sensitivity": [], "search": [{"graph": "str", "float_groups": [], "top1": "float",
                                                           "drop": "float", "lost": "float", "agreement": "float",
                                                           "error": "float"}],
        "table": "str", "seconds": "float",
    }
    layout = _layout(written)
    layout["accuracy"], layout["session"] = list(layout["accuracy"]), list(layout["session"])
    assert layout == expected
    assert written["accuracy"]["max_drop"] is None and written["accuracy"]["within_budget"] is None
