"""Dynamic segments K (2D TSN) and clip frames T (3D): one exported graph runs every K / T of its recorded range
with PyTorch's scores at the same K / T, through the passes and FP16; sizes outside the range, or other than a
fixed graph's, are one-line errors; the sidecar's `ranges` field is validated; the TensorRT profile covers the
chosen range.

The 2D graph is the shared AARM-ResNet-18 export of test_onnx_export (K = 2 trained, 64x64, 7 classes).
"""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from cli_runner import one_line_error, run_cli
from test_onnx_export import build, cached_resnet18_aarm, export_small
from typer.testing import CliRunner

from aarm.data.preprocessing import Preprocessing
from aarm.errors import AarmError, ConfigError
from export.cli import app
from export.onnx_export import temporal_axes
from export.options import open_cli_runner
from runtime.artifact import read_sidecar
from runtime.temporal import choose_temporal, parse_range

ATOL = 1e-4  # fp32 parity, as test_onnx_export


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path, Path]:
    return cached_resnet18_aarm(tmp_path_factory)


def open_runner(path: Path):
    """A runner as the CLI commands open it (graph: onnxruntime CPU; checkpoint: PyTorch CPU)."""
    return open_cli_runner(path, None, None, 1)


def graph_dims(path: Path) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]


def scores_at(path: Path, model: torch.nn.Module, k: int, batch: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(graph scores, PyTorch scores) of one random batch with K = k."""
    runner = choose_temporal(open_runner(path), segments=k)
    feed = runner.example_feed(batch, rng=np.random.default_rng(k))
    assert feed["input"].shape == (batch, k, 3, 64, 64)
    with runner, torch.no_grad():
        return runner.infer(feed)["scores"], model(torch.from_numpy(feed["input"])).numpy()


# --------------------------------------------------------------------------------------------- 2D: dynamic K


def test_export_names_k_and_records_its_range(exported):
    _, _, path = exported
    assert graph_dims(path) == ["N", "K", 3, 64, 64]
    sidecar = read_sidecar(path)
    assert sidecar.inputs[0].shape == ["N", "K", 3, 64, 64]
    assert sidecar.inputs[0].ranges == {"K": {"min": 1, "opt": 2, "max": 25}}
    assert sidecar.extra["dynamic_axes"] == {"batch": "N", "segments": "K"}
    assert sidecar.input_shapes() == [["N", 2, 3, 64, 64]]  # sampling's K by default


@pytest.mark.parametrize("k", [1, 3, 7])
def test_one_graph_matches_pytorch_at_several_k(exported, k):
    model, _, path = exported
    got, want = scores_at(path, model, k)
    assert got.shape == (3, 7)
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


def test_parity_command_runs_both_sides_at_the_chosen_k(exported, tmp_path, capsys, monkeypatch):
    _, ckpt, path = exported
    out = tmp_path / "parity.json"
    code, _, err = run_cli(["parity", path, "--reference", ckpt, "--samples", "4", "--threads", "1",
                            "--segments", "5", "--json", out], capsys, monkeypatch)
    assert code == 0, err
    data = json.loads(out.read_text())
    assert data["passed"]
    assert data["artifact"]["inputs"][0]["shape"][1] == 5 and data["reference"]["inputs"][0]["shape"][1] == 5


def test_k_outside_the_range_or_of_the_wrong_layout_is_refused(exported):
    _, ckpt, path = exported
    runner = open_runner(path)
    with pytest.raises(ConfigError, match=r"`segments` 26 is outside the range 1\.\.25"):  # the parameter
        choose_temporal(runner, segments=26)
    with pytest.raises(ConfigError, match="`frames` does not apply"):
        choose_temporal(runner, frames=8)
    with pytest.raises(ConfigError, match="not both"):
        choose_temporal(runner, segments=3, frames=8)
    assert runner.input_specs[0].shape[1] == 2  # a refused size changes nothing
    torch_runner = open_cli_runner(ckpt, None, None, 1, segments=9)  # a TSN checkpoint takes any K
    assert torch_runner.input_specs[0].shape[1] == 9 and torch_runner.preprocessing[0].segments == 9


@pytest.mark.parametrize("command", ["predict", "bench"])
def test_cli_range_errors_are_one_line(exported, tmp_path, capsys, monkeypatch, command):
    _, _, path = exported
    args = (["predict", tmp_path / "clip.mp4", "--artifact", path] if command == "predict"
            else ["bench", path, "--iterations", "1", "--no-memory", "--no-flops"])
    code, _, err = run_cli([*args, "--segments", "30"], capsys, monkeypatch)
    assert "--segments 30 is outside the range 1..25" in one_line_error(code, err)
    code, _, err = run_cli([*args, "--frames", "8"], capsys, monkeypatch)
    assert "--frames does not apply" in one_line_error(code, err)


def test_fixed_k_graph_takes_only_its_own_k(tmp_path):
    model = build("resnet18", "none", seed=2, segments=3)
    path = export_small(model, tmp_path / "fixed.onnx", temporal_range=(3, 3, 3))
    assert graph_dims(path) == ["N", 3, 3, 64, 64]
    sidecar = read_sidecar(path)
    assert sidecar.inputs[0].ranges is None and "segments" not in sidecar.extra["dynamic_axes"]
    runner = open_runner(path)
    assert choose_temporal(runner, segments=3).input_specs[0].shape[1] == 3
    with pytest.raises(ConfigError, match="fixed K = 3"):
        choose_temporal(runner, segments=4)


def test_export_range_must_hold_the_sampled_k(exported, tmp_path):
    model, _, _ = exported
    with pytest.raises(ConfigError, match="samples K = 2, outside the range 3:5:9"):
        export_small(model, tmp_path / "x.onnx", temporal_range=(3, 5, 9))
    for bad in ("8:1:32", "0:1:2", "1:2", "a"):
        with pytest.raises(ConfigError, match="--segments"):
            parse_range(bad, "--segments")
    assert parse_range("1:8:25", "--segments") == (1, 8, 25) and parse_range("4", "--frames") == (4, 4, 4)


def test_optimised_and_fp16_graphs_keep_k_dynamic(exported, tmp_path):
    from export.fp16 import convert_onnx
    from export.passes import optimize_onnx

    model, _, path = exported
    opt = tmp_path / "model.opt.onnx"
    optimize_onnx(path, opt)
    fp16 = tmp_path / "model.opt.fp16.onnx"
    convert_onnx(opt, fp16, precision="fp16")
    for graph in (opt, fp16):
        assert graph_dims(graph) == ["N", "K", 3, 64, 64]
        assert read_sidecar(graph).inputs[0].ranges == {"K": {"min": 1, "opt": 2, "max": 25}}
    got, want = scores_at(opt, model, 5)
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
    got16, _ = scores_at(fp16, model, 5)
    assert np.isfinite(got16).all() and (got16.argmax(1) == want.argmax(1)).all()


def test_custom_op_graph_keeps_k_dynamic(exported, tmp_path):
    from export.kernels import custom_op_library
    from export.passes import optimize_onnx

    try:
        custom_op_library()
    except AarmError as exc:  # no C++ compiler here: the portable graph is the artifact
        pytest.skip(str(exc))
    model, _, path = exported
    out = tmp_path / "model.kernels.onnx"
    optimize_onnx(path, out, kernels=True)
    assert graph_dims(out) == ["N", "K", 3, 64, 64]
    assert "AarmGate" in {n.op_type for n in onnx.load(str(out)).graph.node}
    got, want = scores_at(out, model, 4)
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


# --------------------------------------------------------------------------------------------- 3D: dynamic T


def test_3d_resnet_graph_matches_pytorch_at_two_t(tmp_path):
    model = build("resnet3d18", "aarm", seed=5)  # 32x32, T = 8 trained
    path = export_small(model, tmp_path / "r3d.onnx")
    assert graph_dims(path) == ["N", 3, "T", 32, 32]
    # asked for 1..32 (the default 1:T:4T); torch.export proves the graph traced at T = 8 for T <= 16 only: past
    # that the last stage no longer downsamples the clip to one frame, which the trace specialised on
    assert read_sidecar(path).inputs[0].ranges == {"T": {"min": 1, "opt": 8, "max": 16}}
    for t in (3, 16):
        runner = choose_temporal(open_runner(path), frames=t)
        feed = runner.example_feed(2, rng=np.random.default_rng(t))
        assert feed["input"].shape == (2, 3, t, 32, 32) and runner.preprocessing[0].frames == t
        with runner, torch.no_grad():
            np.testing.assert_allclose(runner.infer(feed)["scores"], model(torch.from_numpy(feed["input"])).numpy(),
                                       atol=ATOL, rtol=0)
    with pytest.raises(ConfigError, match="`segments` does not apply"):
        choose_temporal(open_runner(path), segments=3)


def test_c3d_keeps_t_fixed_and_says_why():
    config = {"name": "c3d", "num_classes": 5, "attention": "aarm", "in_channels": 3, "options": {}}
    prep = Preprocessing.for_model(config)
    axes, reason = temporal_axes([prep], ["input"], config)
    assert axes == {} and "T stays fixed" in reason
    with pytest.raises(ConfigError, match="cannot apply"):
        temporal_axes([prep], ["input"], config, (8, 16, 32))
    assert temporal_axes([prep], ["input"], config, (16, 16, 16))[0] == {}


def test_cli_build_segments_flag_is_checked_before_tensorrt(exported, capsys, monkeypatch):
    _, _, path = exported
    code, _, err = run_cli(["build", path, "--segments", "1:8:40"], capsys, monkeypatch)
    assert "leaves the range 1..25" in one_line_error(code, err)
    code, _, err = run_cli(["build", path, "--segments", "8:1:25"], capsys, monkeypatch)
    assert "--segments: range needs 1 <= min <= opt <= max" in one_line_error(code, err)


def test_export_command_reports_the_dynamic_axis(tmp_path):
    out = tmp_path / "m.onnx"
    result = CliRunner().invoke(app, ["export", "--model", "resnet18", "--attention", "none", "--num-classes", "3",
                                      "--input-size", "32", "-o", str(out), "--verify-samples", "0",
                                      "--temporal-range", "1:4:12"])
    assert result.exit_code == 0, result.output
    assert "dynamic K 1..12" in result.output
    assert read_sidecar(out).inputs[0].ranges == {"K": {"min": 1, "opt": 4, "max": 12}}


# ------------------------------------------------------------------------------------ evaluate (checkpoints)


def test_evaluate_samples_the_chosen_k_or_refuses_in_one_line(exported, tmp_path, capsys, monkeypatch):
    from types import SimpleNamespace

    from aarm.training.evaluate import temporal_preprocessing

    _, ckpt, _ = exported
    code, _, err = run_cli(["evaluate", ckpt, "--data", tmp_path, "--frames", "8"], capsys, monkeypatch)
    assert "--frames does not apply to this checkpoint" in one_line_error(code, err)
    code, _, err = run_cli(["evaluate", ckpt, "--data", tmp_path, "--segments", "3", "--frames", "8"],
                           capsys, monkeypatch)
    assert "give --segments (2D TSN models) or --frames (3D models), not both" in one_line_error(code, err)
    tsn = SimpleNamespace(preprocessing=Preprocessing(segments=3),
                          model=SimpleNamespace(aarm_config={"name": "resnet18"}))
    assert temporal_preprocessing(tsn, segments=25).segments == 25
    c3d_prep = Preprocessing(layout="NCTHW", size=112, scale_size=128, segments=1, frames=16)
    c3d = SimpleNamespace(preprocessing=c3d_prep, model=SimpleNamespace(aarm_config={"name": "c3d"}))
    assert temporal_preprocessing(c3d, frames=16) == c3d_prep
    with pytest.raises(ConfigError, match="`frames` 8: c3d has a fixed T = 16"):
        temporal_preprocessing(c3d, frames=8)
    r3d = SimpleNamespace(preprocessing=c3d_prep, model=SimpleNamespace(aarm_config={"name": "resnet3d18"}))
    assert temporal_preprocessing(r3d, frames=32).frames == 32
