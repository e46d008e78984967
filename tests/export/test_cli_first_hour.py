"""A new user's first hour (issue 12): bad input to any command is one line on stderr and a non-zero exit, and
nothing that already exists is overwritten without --force.

Commands run through `export.cli.main`, as the `aarm-export` script runs them, so the one-line error mapping is
part of what is tested.
"""

import hashlib
import re
from pathlib import Path

import pytest
from cli_runner import one_line_error, run_cli

from runtime.artifact import Sidecar, TensorSpec, file_sha256, write_sidecar


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under `root` (or of `root` itself)."""
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def fake_onnx(path: Path, data: bytes) -> Path:
    """`data` saved as an ONNX artifact whose sidecar is valid and whose sha256 matches the bytes."""
    path.write_bytes(data)
    sidecar = Sidecar(
        kind="onnx", stage="export", precision="fp32", model={"name": "resnet18", "attention": "aarm"},
        classes=["a", "b"], preprocessing={}, opset=17,
        inputs=[TensorSpec("input", ["N", 2, 3, 32, 32], layout="NKCHW")],
        outputs=[TensorSpec("scores", ["N", 2], layout="NC")],
    )
    write_sidecar(path, sidecar)
    return path


# -- one reader for ONNX files ------------------------------------------------------------------------------
@pytest.mark.parametrize("content", [b"", bytes(range(256)) * 20], ids=["empty", "random-bytes"])
@pytest.mark.parametrize("command", [
    ["optimize", "{m}", "-o", "{d}/out.onnx"],
    ["convert", "{m}", "-o", "{d}/out.onnx"],
    ["triton", "{m}", "--repo", "{d}/repo"],
    ["lint", "{m}"],
    ["calibrate", "{m}", "--data", "{d}", "-o", "{d}/out.onnx"],
], ids=lambda c: c[0])
def test_invalid_onnx_is_one_line_error(command, content, tmp_path, capsys, monkeypatch):
    model = fake_onnx(tmp_path / "model.onnx", content)
    assert file_sha256(model) == hashlib.sha256(content).hexdigest()
    before = tree_digest(tmp_path)
    args = [a.format(m=model, d=tmp_path) for a in command]
    line = one_line_error(*run_cli(args, capsys, monkeypatch)[::2])
    assert f"{model} is not a valid ONNX model" in line
    assert tree_digest(tmp_path) == before  # nothing written, nothing changed


def test_load_onnx_errors_name_the_file(tmp_path):
    from runtime.errors import ArtifactError
    from runtime.onnx_file import load_onnx, parse_onnx

    with pytest.raises(ArtifactError, match="ONNX graph not found"):
        load_onnx(tmp_path / "missing.onnx")
    with pytest.raises(ArtifactError, match="is not a file"):
        load_onnx(tmp_path)
    (tmp_path / "x.onnx").write_bytes(b"\x08")  # a truncated varint
    with pytest.raises(ArtifactError, match=r"x\.onnx is not a valid ONNX model"):
        load_onnx(tmp_path / "x.onnx")
    with pytest.raises(ArtifactError, match="upload is not a valid ONNX model"):
        parse_onnx(b"", "upload")


# -- predict: only videos ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained AARM ResNet-18 TSN (K = 2, 32x32, 2 classes) as a checkpoint: an artifact predict opens."""
    import torch

    import aarm
    from aarm.checkpoint import save_checkpoint
    from aarm.data.preprocessing import Preprocessing

    torch.manual_seed(0)
    model = aarm.create_model("resnet18", num_classes=2, attention="aarm", segments=2).eval()
    prep = Preprocessing.for_model(model.aarm_config, size=32)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt", model, classes=["left", "right"],
                           preprocessing=prep)


def write_video(path: Path, frames: int, size: int = 32) -> Path:
    """A small MPEG-4 video of random frames, written with PyAV."""
    import av
    import numpy as np

    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
        for _ in range(frames):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def write_png(path: Path, size: int = 32) -> Path:
    import numpy as np
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("make, message", [
    (lambda d: write_png(d / "still.png"), "still.png is a still image (png_pipe), not a video"),
    (lambda d: write_png(d / "still.jpg"), "still.jpg is a still image (jpeg_pipe), not a video"),
    (lambda d: write_video(d / "one.mp4", frames=1), "one.mp4 has a single frame"),
    (lambda d: (d / "notes.mp4").write_text("not a video") and d / "notes.mp4", "cannot open video"),
    (lambda d: d / "missing.mp4", "missing.mp4 not found"),
], ids=["png", "jpeg", "one-frame", "text", "missing"])
def test_predict_refuses_what_is_not_a_video(make, message, checkpoint, tmp_path, capsys, monkeypatch):
    video = make(tmp_path)
    json_out = tmp_path / "predictions.json"
    line = one_line_error(*run_cli(["predict", video, "--artifact", checkpoint, "--json", json_out],
                                   capsys, monkeypatch)[::2])
    assert message in line
    assert not json_out.exists()


def test_predict_takes_a_short_video(checkpoint, tmp_path, capsys, monkeypatch):
    """A video shorter than the segments is sampled by repeating frames (aarm.data.sampling's stated policy)."""
    video = write_video(tmp_path / "short.mp4", frames=3)
    code, out, err = run_cli(["predict", video, "--artifact", checkpoint, "--top-k", "1"], capsys, monkeypatch)
    assert code == 0, err
    assert "short.mp4" in out and ("left" in out or "right" in out)


# -- help screens -------------------------------------------------------------------------------------------
def _help_screens() -> dict[str, str]:
    import typer.main
    from typer.testing import CliRunner

    from export.cli import app

    names = [""] + sorted(typer.main.get_command(app).commands)
    screens = {}
    for name in names:
        result = CliRunner().invoke(app, [*([name] if name else []), "--help"], env={"COLUMNS": "120"})
        assert result.exit_code == 0, result.output
        screens[name or "aarm-export"] = result.output
    return screens


def test_help_reads_as_usual():
    """Flags without a value type, arguments in upper case, no help text eaten as markup."""
    screens = _help_screens()
    assert len(screens) > 15
    for name, text in screens.items():
        assert "<bool>" not in text, f"{name}: a flag shown as taking a value"
        usage = next(line for line in text.splitlines() if "Usage:" in line)
        assert not re.search(r"\{\w+\}|\[[a-z_]+\]", usage), f"{name}: {usage.strip()}"
        assert not re.search(r"\w \.(\s|$)", text), f"{name}: stray space before a full stop (markup ate [...]?)"
    assert re.search(r"--force\s+Overwrite", screens["lint"])


# -- nothing overwritten without --force ---------------------------------------------------------------------
@pytest.mark.parametrize("command", [
    ["models", "--json", "{j}"],
    ["export", "--model", "resnet18", "--num-classes", "2", "-o", "{d}/new.onnx", "--json", "{j}"],
    ["optimize", "{d}/model.onnx", "-o", "{d}/new.onnx", "--json", "{j}"],
    ["convert", "{d}/model.onnx", "-o", "{d}/new.onnx", "--json", "{j}"],
    ["lint", "{d}/model.onnx", "--json", "{j}"],
    ["predict", "{d}/clip.mp4", "--artifact", "{d}/model.onnx", "--json", "{j}"],
], ids=lambda c: c[0])
def test_existing_json_is_kept_without_force(command, tmp_path, capsys, monkeypatch):
    fake_onnx(tmp_path / "model.onnx", b"")
    json_out = tmp_path / "result.json"
    json_out.write_text('{"mine": true}\n')
    before = tree_digest(tmp_path)
    line = one_line_error(*run_cli([a.format(d=tmp_path, j=json_out) for a in command], capsys, monkeypatch)[::2])
    assert line == f"error: {json_out} exists; pass --force to overwrite it"
    assert tree_digest(tmp_path) == before


# -- lint groups near-identical findings ---------------------------------------------------------------------
def uint8_qdq_graph(path: Path, pairs: int) -> Path:
    """A float graph with `pairs` uint8 QuantizeLinear/DequantizeLinear pairs in a chain: 2 * pairs lint errors
    (TensorRT takes symmetric int8 only), of two op types."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.array(0.1, dtype=np.float32), "scale"),
             numpy_helper.from_array(np.array(128, dtype=np.uint8), "zero")]
    nodes, prev = [], "x"
    for i in range(pairs):
        nodes.append(helper.make_node("QuantizeLinear", [prev, "scale", "zero"], [f"q{i}"], name=f"quant_{i}"))
        nodes.append(helper.make_node("DequantizeLinear", [f"q{i}", "scale", "zero"], [f"d{i}"], name=f"dequant_{i}"))
        prev = f"d{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"], name="out"))
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_lint_groups_findings_by_rule_and_op(tmp_path, capsys, monkeypatch):
    import json

    from export.lint import group_findings, lint_onnx

    model = uint8_qdq_graph(tmp_path / "q.onnx", pairs=40)
    findings = lint_onnx(model)
    groups = group_findings(findings)
    assert len(findings) == 80 and [(g.op, g.count) for g in groups] == [("QuantizeLinear", 40),
                                                                          ("DequantizeLinear", 40)]
    assert groups[0].nodes[:2] == ("quant_0", "quant_1") and all(g.severity == "error" for g in groups)

    code, out, err = run_cli(["lint", model, "--json", tmp_path / "lint.json"], capsys, monkeypatch)
    assert code == 1 and "80 error(s)" in err
    assert "80 findings in 2 groups" in out and "(+37 more)" in out and "quant_39" not in out
    assert len(out.splitlines()) < 20
    saved = json.loads((tmp_path / "lint.json").read_text())
    assert len(saved["findings"]) == 80 and [g["count"] for g in saved["groups"]] == [40, 40]

    code, out, err = run_cli(["lint", model, "--verbose"], capsys, monkeypatch)
    assert code == 1 and "dequant_39" in out and "quant_39" in out


# -- bad numbers, wrong suffixes, files where folders go: one line, before any work -------------------------
@pytest.mark.parametrize("command, message", [
    (["triton", "{m}", "--repo", "{d}/repo", "--max-queue-delay-us", "-5"], "--max-queue-delay-us must be >= 0"),
    (["triton", "{m}", "--repo", "{m}"], "is a file; a Triton model repository is a folder"),
    (["regress", "{m}", "--against", "{m}", "--max-ratio", "nan"], "--max-ratio must be > 0, got nan"),
    (["regress", "{m}", "--baseline", "{d}/b.json", "--trials", "0"], "--trials must be >= 1, got 0"),
    (["regress", "{m}", "--baseline", "{d}/b.json", "--tolerance", "-1"], "--tolerance must be >= 0"),
    (["predict", "{d}/clip.mp4", "--artifact", "{m}", "--top-k", "0"], "--top-k must be >= 1, got 0"),
    (["predict", "{d}/clip.mp4", "--artifact", "{m}", "--workers", "-1"], "--workers must be >= 1, got -1"),
    (["export", "--model", "resnet18", "--num-classes", "2", "--input-size", "0", "-o", "{d}/x.onnx"],
     "--input-size must be >= 1, got 0"),
    (["export", "--model", "resnet18", "--num-classes", "0", "-o", "{d}/x.onnx"], "--num-classes must be >= 1"),
    (["export", "--model", "resnet18", "--num-classes", "2", "--opset", "99", "-o", "{d}/x.onnx"],
     "opset must be <= "),
    (["export", "--model", "resnet18", "--num-classes", "2", "-o", "{d}/x.txt"], "file name ends in .onnx"),
    (["export", "--model", "resnet18", "--num-classes", "2", "-o", "{d}/x.onnx", "--verify-samples", "0",
      "--json", "{d}/x.json"], "--json writes the parity check, which --verify-samples 0 skips"),
    (["optimize", "{m}", "-o", "{m}", "--force"], "is the input graph"),
    (["optimize", "{m}", "-o", "{d}/o.onnx", "--json", "{d}/o.onnx"], "is the output graph"),
    (["convert", "{m}", "-o", "{d}/o.onnx", "--verify-samples", "-2"], "--verify-samples must be >= 0, got -2"),
    (["models", "--num-classes", "0"], "--num-classes must be >= 1, got 0"),
    (["lint", "{m}", "--json", "{m}", "--force"], "is the graph being checked"),
    (["pipeline", "-c", "{d}/best.pt", "-o", "{m}"], "is a file; the pipeline writes into a folder"),
    (["pipeline", "-c", "{d}/best.pt", "-o", "{d}/deploy", "--data", "{d}/nothere"], "dataset folder not found"),
    (["pipeline", "-c", "{d}/best.pt", "-o", "{d}/deploy", "--threads", "0"], "--threads must be >= 1, got 0"),
    (["pipeline", "-c", "{d}/best.pt", "-o", "{d}/deploy", "--kernels", "on"],
     "pipeline option kernels must be auto or off, got 'on'"),
    (["pipeline", "-c", "{d}/best.pt", "-o", "{d}/deploy", "--config", "{d}/p.toml"],
     "pipeline option bench_batches must be integers >= 1, got [0]"),
    (["explain", "{d}/clip.mp4", "-c", "{m}", "-o", "{d}/a.png"], "explain reads the attention maps of the PyTorch"),
    (["explain", "{d}/clip.mp4", "-c", "{d}/best.pt", "-o", "{d}/a.jpg"], "output must end in .png or .gif"),
    (["triton", "{d}/best.pt", "--repo", "{d}/repo"], "Triton serves an ONNX graph (.onnx) or a TensorRT engine"),
    (["demo", "-o", "{d}/demo", "--epochs", "0"], "--epochs must be >= 1, got 0"),
    (["demo", "-o", "{m}"], "is not a folder"),
], ids=lambda v: v[0] if isinstance(v, list) else "")
def test_bad_option_is_one_line_and_changes_nothing(command, message, tmp_path, capsys, monkeypatch):
    model = fake_onnx(tmp_path / "model.onnx", b"")
    (tmp_path / "best.pt").write_bytes(b"weights")
    (tmp_path / "p.toml").write_text("[pipeline]\nbench_batches = [0]\n")
    before = tree_digest(tmp_path)
    args = [a.format(m=model, d=tmp_path) for a in command]
    line = one_line_error(*run_cli(args, capsys, monkeypatch)[::2])
    assert message in line
    assert tree_digest(tmp_path) == before


@pytest.mark.slow
def test_export_writes_the_opset_asked_for(tmp_path, capsys, monkeypatch):
    """The dynamo exporter writes opset 18; a higher --opset used to be dropped silently."""
    from runtime.artifact import read_sidecar
    from runtime.onnx_file import load_onnx

    out = tmp_path / "m.onnx"
    code, _, err = run_cli(["export", "--model", "resnet18", "--num-classes", "2", "--input-size", "32",
                            "--segments", "2", "--opset", "21", "-o", out, "--verify-samples", "2"],
                           capsys, monkeypatch)
    assert code == 0, err
    graph_opset = next(o.version for o in load_onnx(out).opset_import if o.domain in ("", "ai.onnx"))
    assert graph_opset == read_sidecar(out).opset == 21
