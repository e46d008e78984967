"""Attention outputs (`export --attention-outputs`): STAM maps and CAM weights as extra graph outputs that equal
PyTorch's hooks, survive optimize and FP16 conversion, are compared by parity, and are drawn by
`predict --explain` from the graph alone, without PyTorch."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from cli_runner import one_line_error, run_cli
from PIL import Image
from test_onnx_export import build, cached_resnet18_aarm
from typer.testing import CliRunner

from aarm.attention_picture import short_stage
from aarm.checkpoint import save_checkpoint
from aarm.data.preprocessing import Preprocessing
from aarm.data.synthetic import make_synthetic
from aarm.errors import ConfigError
from aarm.explain import attention_output_names, capture_attention
from export.cli import app
from export.fp16 import convert_onnx
from export.onnx_export import export_onnx
from export.passes import optimize_onnx
from runtime.artifact import read_sidecar
from runtime.backends import open_runner
from runtime.backends.torch_backend import TorchRunner
from runtime.explain import explain_feed
from runtime.parity import compare

CLASSES = [f"action_{i}" for i in range(5)]
STAGES = ["layer1.1", "layer2.1", "layer3.1", "layer4.1"]  # the last AARM block of each ResNet-18 stage
NAMES = [f"{kind}.{s}" for s in STAGES for kind in ("stam", "cam")]
FP32_ATOL = 1e-5  # maps and weights lie in (0, 1): float32 rounding is ~1e-7


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Preprocessing, Path, Path]:
    """A randomised AARM-ResNet-18 (TSN, K = 2, 32x32, 5 classes) as a checkpoint and as an ONNX graph exported
    from it by `aarm-export export --attention-outputs` (parity JSON beside it): (model, preprocessing,
    checkpoint, onnx)."""
    d = tmp_path_factory.mktemp("attention")
    model = build("resnet18", "aarm", num_classes=len(CLASSES), seed=3)
    prep = Preprocessing.for_model(model.aarm_config, size=32)
    ckpt = save_checkpoint(d / "model.pt", model, classes=CLASSES, preprocessing=prep)
    result = CliRunner().invoke(app, ["export", str(ckpt), "-o", str(d / "model.onnx"), "--attention-outputs",
                                      "--verify-samples", "4", "--json", str(d / "parity.json")])
    assert result.exit_code == 0, result.output
    return model, prep, Path(ckpt), d / "model.onnx"


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("attention-videos") / "data"
    make_synthetic(root, classes=1, videos_per_class=2, frames=8, size=32, seed=0, progress=None)
    return sorted((root / "videos").rglob("*.mp4"))[0]


def graph_outputs(path: Path) -> list[str]:
    return [o.name for o in onnx.load(str(path)).graph.output]


def test_default_export_has_only_the_scores(tmp_path_factory):
    _, _, path = cached_resnet18_aarm(tmp_path_factory)
    assert graph_outputs(path) == ["scores"]
    assert [t.name for t in read_sidecar(path).outputs] == ["scores"]


def test_attention_outputs_are_named_from_the_modules_and_recorded(tiny):
    model, _, _, path = tiny
    assert attention_output_names(model) == NAMES
    assert graph_outputs(path) == ["scores", *NAMES]
    outputs = {t.name: t for t in read_sidecar(path).outputs}
    assert list(outputs) == ["scores", *NAMES] and outputs["scores"].layout == "NC"
    side = {"layer1.1": 8, "layer2.1": 4, "layer3.1": 2, "layer4.1": 1}  # 32 px / 4, 8, 16, 32
    channels = {"layer1.1": 64, "layer2.1": 128, "layer3.1": 256, "layer4.1": 512}
    for s in STAGES:
        stam, cam = outputs[f"stam.{s}"], outputs[f"cam.{s}"]
        assert stam.layout == "NVTHW" and stam.shape[0] == "N" and stam.shape[2:] == [1, side[s], side[s]]
        assert cam.layout == "NVC" and cam.shape[0] == "N" and cam.shape[2] == channels[s]


def test_export_command_checks_every_map(tiny):
    _, _, _, path = tiny
    report = json.loads((path.parent / "parity.json").read_text())
    rows = report["attention"]["metrics"]
    assert list(rows) == [f"random {n}" for n in NAMES] and report["attention"]["failures"] == []
    assert all(m["samples"] == 4 and m["max_abs"] < FP32_ATOL for m in rows.values())


def test_graph_maps_equal_pytorch_hooks(tiny):
    model, _, _, path = tiny
    x = np.random.default_rng(0).standard_normal((3, 2, 3, 32, 32), dtype=np.float32)
    with open_runner(path, threads=1) as runner:
        out = runner.infer({"input": x})
    for b in range(len(x)):
        want = capture_attention(model, torch.from_numpy(x[b:b + 1]))
        assert [short_stage(s) for s in want.stages] == STAGES
        for s, stam, cam in zip(STAGES, want.stam, want.cam, strict=True):
            np.testing.assert_allclose(out[f"stam.{s}"][b], stam, rtol=0, atol=FP32_ATOL)
            np.testing.assert_allclose(out[f"cam.{s}"][b], cam, rtol=0, atol=FP32_ATOL)
        np.testing.assert_allclose(out["scores"][b], want.scores, rtol=0, atol=1e-4)


def test_parity_reports_each_attention_output(tiny):
    model, prep, ckpt, path = tiny
    result = compare(open_runner(path, threads=1), open_runner(ckpt), samples=4, batch=2)
    assert result, result.failures
    assert list(result.attention) == [f"random {n}" for n in NAMES]
    assert all(m["samples"] == 4 and m["max_abs"] < FP32_ATOL for m in result.attention.values())
    assert result.to_dict()["attention"] == result.attention


def test_parity_fails_on_a_changed_stam(tiny):
    model, prep, _, path = tiny
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.backbone.layer2[1].attn.stam.conv[2].bias.add_(0.5)
    result = compare(open_runner(path, threads=1), TorchRunner(changed, preprocessing=prep, classes=CLASSES),
                     samples=4, batch=2)
    failing = {f.input_set for f in result.violations}
    assert "random stam.layer2.1" in failing
    assert "random stam.layer1.1" not in failing and "random cam.layer1.1" not in failing


def test_optimised_and_fp16_graphs_keep_attention_outputs(tiny, tmp_path):
    _, _, ckpt, path = tiny
    opt, half = tmp_path / "model.opt.onnx", tmp_path / "model.fp16.onnx"
    optimize_onnx(path, opt)
    convert_onnx(opt, half)
    for graph in (opt, half):
        assert graph_outputs(graph) == ["scores", *NAMES]
        assert [t.name for t in read_sidecar(graph).outputs] == ["scores", *NAMES]
        result = compare(open_runner(graph, threads=1), open_runner(ckpt), samples=4, batch=2)
        assert result, (graph.name, result.failures)
        assert list(result.attention) == [f"random {n}" for n in NAMES]
    assert max(m["max_abs"] for m in compare(open_runner(opt, threads=1), open_runner(ckpt), samples=2,
                                             batch=2).attention.values()) < FP32_ATOL


def test_models_without_aarm_blocks_or_with_two_streams_are_refused(tmp_path):
    import aarm

    se = aarm.create_model("resnet18", num_classes=3, attention="se", segments=2)
    with pytest.raises(ConfigError, match="no AARM blocks"):
        export_onnx(se, tmp_path / "se.onnx", classes=CLASSES[:3], preprocessing=Preprocessing.for_model(
            se.aarm_config, size=32), trained=False, attention_outputs=True)
    rgb = aarm.create_model("resnet18", num_classes=3, segments=2)
    flow = aarm.create_model("resnet18", num_classes=3, segments=2, in_channels=20)
    preps = [Preprocessing.for_model(m.aarm_config, size=32) for m in (rgb, flow)]
    with pytest.raises(ConfigError, match="single-stream"):
        export_onnx(aarm.TwoStream(rgb, flow), tmp_path / "two.onnx", classes=CLASSES[:3], preprocessing=preps,
                    trained=False, attention_outputs=True)
    assert not (tmp_path / "se.onnx").exists() and not (tmp_path / "two.onnx").exists()


def _picture(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_predict_explain_draws_the_graphs_maps(tiny, video, tmp_path, capsys, monkeypatch):
    _, _, _, path = tiny
    out = tmp_path / "maps.png"
    code, stdout, err = run_cli(["predict", video, "--artifact", path, "--threads", "1", "--explain", out],
                                capsys, monkeypatch)
    assert code == 0, err
    assert "attention maps of" in stdout and str(out) in stdout
    pixels = _picture(out)
    assert pixels.shape[0] > 400 and pixels.shape[1] > 500  # 4 STAM rows + the CAM plot, 2 frames wide
    assert pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 500  # not blank: heatmaps


def test_predict_explain_needs_attention_outputs(tmp_path_factory, tiny, video, tmp_path, capsys, monkeypatch):
    _, _, plain = cached_resnet18_aarm(tmp_path_factory)
    line = one_line_error(*run_cli(["predict", video, "--artifact", plain, "--explain", tmp_path / "a.png"],
                                   capsys, monkeypatch)[::2])
    assert "no attention outputs" in line and "export it with --attention-outputs" in line
    line = one_line_error(*run_cli(["stream", video, "--artifact", plain, "--explain", tmp_path / "d"],
                                   capsys, monkeypatch)[::2])
    assert "--attention-outputs" in line
    _, _, ckpt, path = tiny
    line = one_line_error(*run_cli(["predict", video, "--artifact", ckpt, "--explain", tmp_path / "b.png"],
                                   capsys, monkeypatch)[::2])
    assert "for a checkpoint use aarm-export explain" in line
    line = one_line_error(*run_cli(["predict", video, video, "--artifact", path, "--explain", tmp_path / "c.png"],
                                   capsys, monkeypatch)[::2])
    assert "one video" in line
    assert not any((tmp_path / n).exists() for n in ("a.png", "b.png", "c.png", "d"))


def test_explain_from_python_names_the_parameters(tmp_path_factory, tiny, tmp_path):
    from aarm.attention_picture import maps_from_outputs
    from runtime.explain import require_attention

    _, _, plain = cached_resnet18_aarm(tmp_path_factory)
    with pytest.raises(ConfigError, match="has no attention outputs; export it with `attention_outputs`$"):
        require_attention(open_runner(plain, threads=1))
    with pytest.raises(ConfigError, match="for a checkpoint use `capture_attention`$"):
        require_attention(open_runner(tiny[2]))
    with pytest.raises(ConfigError, match="export it with `attention_outputs`$"):
        maps_from_outputs({"scores": np.zeros((1, 5))}, {"scores": "NC"})


def test_stream_explain_draws_each_window(tiny, video, tmp_path, capsys, monkeypatch):
    _, _, _, path = tiny
    folder = tmp_path / "windows"
    code, stdout, err = run_cli(["stream", video, "--artifact", path, "--window", "4f", "--stride", "4f",
                                 "--max-windows", "2", "--jsonl", tmp_path / "w.jsonl", "--explain", folder],
                                capsys, monkeypatch)
    assert code == 0, err
    pictures = sorted(p.name for p in folder.iterdir())
    assert pictures == ["window_00000.png", "window_00001.png"]
    assert all(_picture(folder / p).std() > 20 for p in pictures)


NO_TORCH = """
import sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
from pathlib import Path
import numpy as np
from runtime.backends import open_runner
from runtime.explain import explain_feed
with open_runner(sys.argv[1], threads=1) as runner:
    maps = explain_feed(runner, {"input": np.load(sys.argv[2])}, Path(sys.argv[3]))
assert sys.modules["torch"] is None
print(" ".join(maps.stages))
"""


def test_explain_from_the_graph_runs_without_pytorch(tiny, tmp_path):
    _, _, _, path = tiny
    x = np.random.default_rng(1).standard_normal((1, 2, 3, 32, 32), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    done = subprocess.run([sys.executable, "-c", NO_TORCH, str(path), str(tmp_path / "x.npy"),
                           str(tmp_path / "no_torch.png")], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == STAGES
    with open_runner(path, threads=1) as runner:  # the same picture drawn here, where PyTorch is loaded
        explain_feed(runner, {"input": x}, tmp_path / "here.png")
    np.testing.assert_array_equal(_picture(tmp_path / "no_torch.png"), _picture(tmp_path / "here.png"))
