"""`aarm-export calibrate` end to end on the tiny AARM model: a TensorRT-shaped INT8 graph that lints clean."""

import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper
from tensorrt_table import table_scales
from typer.testing import CliRunner

from aarm.errors import ConfigError
from calibration.sensitivity import graph_scores
from export.cli import app
from runtime.artifact import read_sidecar


@pytest.fixture(scope="module")
def tensorrt_int8(tiny, videos, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "model.int8.onnx"
    result = CliRunner().invoke(app, [
        "calibrate", str(tiny.onnx), "--data", str(videos), "--clips", "5", "--method", "minmax",
        "--target", "tensorrt", "--eval-clips", "5", "--max-drop", "100", "-o", str(out),
    ])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_cli_writes_graph_sidecar_report_and_table(tensorrt_int8, tiny):
    out, output = tensorrt_int8
    assert "TensorRT lint: 0 error(s)" in output and "Held-out accuracy" in output
    sidecar = read_sidecar(out)
    assert (sidecar.precision, sidecar.stage, sidecar.classes) == ("int8", "calibrate", tiny.classes)
    assert sidecar.parent_sha256 == read_sidecar(tiny.onnx).sha256
    int8 = sidecar.extra["int8"]
    assert (int8["target"], int8["method"], int8["clips"], int8["weight_type"]) == ("tensorrt", "minmax", 5, "int8")
    report = json.loads(out.with_name("model.int8.calibration.json").read_text())
    assert report["quantization"]["preprocessed"] is True  # onnxruntime's quant_pre_process ran
    assert report["accuracy"]["clips"] == 5 and report["accuracy"]["within_budget"] is True
    table = out.with_name("model.int8.calibration.cache")
    assert table.read_text().startswith("TRT-") and all(s > 0 for s in table_scales(table).values())
    x = np.random.default_rng(0).standard_normal((3, *tiny.preprocessing.input_shape(1)[1:]), dtype=np.float32)
    assert graph_scores(out, x).shape == (3, len(tiny.classes))


def test_tensorrt_target_has_symmetric_int8_with_zero_points_zero(tensorrt_int8):
    from export.lint import lint_onnx

    model = onnx.load(str(tensorrt_int8[0]))
    inits = {t.name: t for t in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    points = [numpy_helper.to_array(inits[n.input[2]]) for n in qdq if len(n.input) > 2 and n.input[2] in inits]
    assert qdq and len(points) == len(qdq)  # every Q/DQ node has its zero point as an initializer
    assert all(p.dtype == np.int8 and not p.any() for p in points)
    dq_inputs = {inits[n.input[0]].data_type for n in qdq if n.op_type == "DequantizeLinear" and n.input[0] in inits}
    assert dq_inputs == {TensorProto.INT8}  # weights int8; no int32 biases (TensorRT's DQ takes none)
    assert [f for f in lint_onnx(model) if f.severity == "error"] == []


def test_cli_refuses_to_overwrite_and_reports_bad_options(tensorrt_int8, tiny, videos):
    out, _ = tensorrt_int8
    result = CliRunner().invoke(app, ["calibrate", str(tiny.onnx), "--data", str(videos), "-o", str(out)])
    assert result.exit_code != 0 and "--force" in str(result.exception)
    result = CliRunner().invoke(app, ["calibrate", str(tiny.onnx), "--data", str(videos), "--method", "kl",
                                      "-o", str(out.with_name("other.onnx"))])
    assert isinstance(result.exception, ConfigError) and "unknown calibration method 'kl'" in str(result.exception)
    result = CliRunner().invoke(app, ["calibrate", str(tiny.onnx), "--data", str(videos), "--clips", "2",
                                      "--method", "minmax", "--exclude", "/nowhere",
                                      "-o", str(out.with_name("other.onnx"))])
    assert "--exclude '/nowhere' matches no node" in str(result.exception)
    result = CliRunner().invoke(app, ["calibrate", str(tiny.onnx), "--data", str(videos), "--clips", "2",
                                      "--method", "minmax", "--eval-clips", "2", "--no-passes",
                                      "--exclude", "backbone.fc", "-o", str(out.with_name("excluded.onnx"))])
    assert result.exit_code == 0, result.output
    assert "requested (--exclude backbone.fc)" in result.output  # the table's reason, in the command's words


def test_unlabelled_folder_of_videos_calibrates_without_a_budget_and_says_so(tiny, videos, tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    for video in sorted((videos / "videos").rglob("*.*"))[:3]:
        shutil.copy(video, folder / video.name)
    out = tmp_path / "model.int8.onnx"
    result = CliRunner().invoke(app, ["calibrate", str(tiny.onnx), "--data", str(folder), "--clips", "3",
                                      "--method", "minmax", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "no accuracy budget" in result.output and "no labelled held-out clips" in result.output
    assert "pass --eval-data with labelled clips" in " ".join(result.output.split())  # the flag, as typed
    report = json.loads(out.with_name("model.int8.calibration.json").read_text())
    assert report["accuracy"] is None and "no accuracy budget" in report["budget_note"]
    assert "pass `eval_data` with labelled clips" in report["budget_note"]  # the file names the parameter
    assert report["calibration"]["clips"] == 3 and "folder of 3 videos" in report["calibration"]["data"]
    assert "rewrite_channel_fusion" in report["quantization"]["graph_passes"]  # the standard-op passes ran first
    assert report["session"]["checked"] and set(report["session"]["float"]) == {e["node"] for e in report["excluded"]}
    assert read_sidecar(out).extra["int8"]["budget_note"] == report["budget_note"]
    # An explicit budget still needs labelled held-out clips
    result = CliRunner().invoke(app, ["calibrate", str(tiny.onnx), "--data", str(folder), "--max-drop", "1",
                                      "-o", str(tmp_path / "other.onnx")])
    assert result.exit_code != 0 and "needs labelled held-out clips" in str(result.exception)
    assert str(result.exception).startswith("an accuracy budget (--max-drop) needs")
    assert str(result.exception).endswith("no test subset with labels: pass --eval-data")


def test_videos_and_annotations_elsewhere_are_found_as_train_takes_them(tiny, videos, tmp_path, capsys, monkeypatch):
    """A dataset unpacked with its videos and split files away from --data: --videos and --annotations say where
    (as for train, evaluate and parity); without them it is a one-line error."""
    from cli_runner import one_line_error, run_cli

    root, clips, splits = tmp_path / "root", tmp_path / "unpacked" / "clips", tmp_path / "unpacked" / "splits"
    root.mkdir()
    shutil.copytree(videos / "videos", clips)
    shutil.copytree(videos / "ucfTrainTestlist", splits)
    out = tmp_path / "model.int8.onnx"
    args = ["calibrate", tiny.onnx, "--data", root, "--clips", "5", "--method", "minmax", "--eval-clips", "5",
            "--max-drop", "100", "-o", out]
    code, _, err = run_cli(args, capsys, monkeypatch)
    line = one_line_error(code, err)
    assert str(root) in line and not out.exists()
    code, stdout, err = run_cli([*args, "--videos", clips, "--annotations", splits], capsys, monkeypatch)
    assert code == 0, err
    report = json.loads(out.with_name("model.int8.calibration.json").read_text())
    assert report["calibration"]["clips"] == 5 and report["calibration"]["data"] == f"{root} split 1 train"
    assert report["accuracy"]["clips"] == 5 and report["accuracy"]["data"] == f"{root} split 1 test"
    assert report["accuracy"]["overlap_with_calibration"] == 0  # the split files' train and test subsets
