"""`aarm-export train`, `evaluate`, `make-synthetic` and `extract-flow` as a new user meets them (issue 12):
the README's evaluate example runs, bad numbers are one line naming the option, nothing is overwritten without
--force, datasets are found where people unpack them, and train and test may not silently be the same videos.

Commands run through `export.cli.main`, as the `aarm-export` script runs them, so the one-line error mapping is
part of what is tested. Checkpoints are untrained ResNet-18 TSNs at 32 x 32: only the plumbing is under test.
"""

import hashlib
import importlib
import json
import shutil
from pathlib import Path

import pytest
from cli_runner import one_line_error, run_cli

from aarm.data.synthetic import make_synthetic

CLASSES = ["MoveLeft", "MoveRight"]
evaluate_module = importlib.import_module("aarm.training.evaluate")  # aarm.training.evaluate is also a function


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic set in UCF101's layout: 2 classes x 4 videos of 12 frames, 32 x 32 (4 train, 4 test)."""
    root = tmp_path_factory.mktemp("syn") / "data"
    make_synthetic(root, classes=2, videos_per_class=4, frames=12, size=32, seed=2)
    return root


def _checkpoint(path: Path, seed: int) -> Path:
    import torch

    import aarm
    from aarm.checkpoint import save_checkpoint
    from aarm.data.preprocessing import Preprocessing

    torch.manual_seed(seed)
    model = aarm.create_model("resnet18", num_classes=2, attention="aarm", segments=2).eval()
    return save_checkpoint(path, model, classes=CLASSES, preprocessing=Preprocessing.for_model(model.aarm_config,
                                                                                                size=32))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("ckpt")
    return _checkpoint(folder / "a.pt", 0), _checkpoint(folder / "b.pt", 1)


@pytest.fixture
def no_evaluation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a checkpoint gets loaded: the command must stop before evaluating anything."""

    def refuse(path: Path) -> None:
        raise AssertionError(f"{path} loaded: the evaluation started")

    monkeypatch.setattr(evaluate_module, "load_checkpoint", refuse)


# -- evaluate as the README writes it ------------------------------------------------------------------------
def test_readme_evaluate_example_runs(dataset, checkpoints, tmp_path, capsys, monkeypatch):
    out, png = tmp_path / "eval.json", tmp_path / "cm.png"
    code, stdout, err = run_cli(["evaluate", checkpoints[0], "--data", dataset, "--json", out, "--confusion", png,
                                 "--workers", "0"], capsys, monkeypatch)
    assert code == 0, err
    result = json.loads(out.read_text())
    assert result["streams"][0]["samples"] == 4 and "fused" not in result
    assert png.read_bytes()[:4] == b"\x89PNG"
    # Not a terminal here: plain progress lines instead of a live bar that shows nothing in a log.
    assert "eval: 1/1 (100 %" in stdout
    assert "- (<= 5 classes)" in stdout  # two classes: a top-5 accuracy of 100 % would say nothing


def test_two_stream_weights_and_their_default(dataset, checkpoints, tmp_path, capsys, monkeypatch):
    args = ["evaluate", *checkpoints, "--data", dataset, "--data", dataset, "--workers", "0", "--batch-size", "4"]
    code, stdout, err = run_cli([*args, "--json", tmp_path / "d.json"], capsys, monkeypatch)
    assert code == 0, err
    assert json.loads((tmp_path / "d.json").read_text())["weights"] == [1.0, 1.5] and "w=1,1.5" in stdout
    code, stdout, err = run_cli([*args, "--weights", "2,0.5", "--json", tmp_path / "w.json"], capsys, monkeypatch)
    assert code == 0, err
    assert json.loads((tmp_path / "w.json").read_text())["weights"] == [2.0, 0.5]


@pytest.mark.parametrize(("count", "extra", "message"), [
    (1, ["--weights", "1,1.5"], "--weights are late-fusion weights for two checkpoints (RGB, flow); one checkpoint "
                                "takes none"),
    (2, ["--weights", "abc"], "--weights takes comma-separated numbers (RGB,flow), got 'abc'"),
    (2, ["--weights", "1,2,3"], "--weights takes one weight per checkpoint: 2 checkpoints, 3 weights"),
    (2, ["--weights", "1,nan"], "--weights must be a finite number, got nan"),
    (2, ["--weights", "1,-1"], "--weights must be >= 0, got -1.0"),
    (2, ["--weights", "0,0"], "--weights are all zero"),
    (1, ["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    (1, ["--workers", "-1"], "--workers must be >= 0, got -1"),
    (1, ["--clips", "0"], "--clips must be >= 1, got 0"),
    (1, ["--split", "0"], "--split must be >= 1, got 0"),
    (2, ["--videos", "x"], "give one --videos folder per checkpoint (2), got 1"),
    (1, ["--device", "gpu"], "unknown device 'gpu'; use cpu, cuda or cuda:N"),
    (1, ["--device", "cuda:99"], "device 'cuda:99' is not available here"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_evaluate_refuses_bad_options_before_evaluating(count, extra, message, dataset, checkpoints, tmp_path,
                                                         capsys, monkeypatch, no_evaluation):
    data = [a for _ in range(count) for a in ("--data", dataset)]
    out = tmp_path / "eval.json"
    line = one_line_error(*run_cli(["evaluate", *checkpoints[:count], *data, *extra, "--json", out], capsys,
                                   monkeypatch)[::2])
    assert line == f"error: {message}" or line.startswith(f"error: {message}"), line
    assert not out.exists()


@pytest.mark.parametrize("option", ["--json", "--confusion"])
def test_evaluate_keeps_existing_files_without_force(option, dataset, checkpoints, tmp_path, capsys, monkeypatch):
    existing = tmp_path / ("mine.json" if option == "--json" else "mine.png")
    existing.write_bytes(b"the user's own file\n")
    before = digest(existing)
    args = ["evaluate", checkpoints[0], "--data", dataset, "--workers", "0", option, existing]
    with monkeypatch.context() as patch:
        patch.setattr(evaluate_module, "load_checkpoint", lambda p: (_ for _ in ()).throw(AssertionError(p)))
        line = one_line_error(*run_cli(args, capsys, monkeypatch)[::2])
    assert line == f"error: {existing} exists; pass --force to overwrite it"
    assert digest(existing) == before
    code, _, err = run_cli([*args, "--force"], capsys, monkeypatch)
    assert code == 0, err
    assert digest(existing) != before


# -- datasets as people unpack them -------------------------------------------------------------------------
def test_video_and_annotation_folders_given_apart(dataset, checkpoints, tmp_path, capsys, monkeypatch):
    videos, lists, root = tmp_path / "clips", tmp_path / "lists", tmp_path / "root"
    shutil.copytree(dataset / "videos", videos)
    shutil.copytree(dataset / "ucfTrainTestlist", lists)
    root.mkdir()
    code, _, err = run_cli(["evaluate", checkpoints[0], "--data", root, "--workers", "0"], capsys, monkeypatch)
    assert one_line_error(code, err).startswith(f"error: {root} holds no class folders")  # nothing to find there
    out = tmp_path / "eval.json"
    code, _, err = run_cli(["evaluate", checkpoints[0], "--data", root, "--videos", videos, "--annotations", lists,
                            "--workers", "0", "--json", out], capsys, monkeypatch)
    assert code == 0, err
    assert json.loads(out.read_text())["streams"][0]["samples"] == 4


def test_lower_case_video_folder_is_found(dataset, checkpoints, tmp_path, capsys, monkeypatch):
    root = tmp_path / "ucf"
    shutil.copytree(dataset / "ucfTrainTestlist", root / "ucftraintestlist")
    shutil.copytree(dataset / "videos", root / "ucf101")  # names people give their folders, any case
    code, _, err = run_cli(["evaluate", checkpoints[0], "--data", root, "--workers", "0"], capsys, monkeypatch)
    assert code == 0, err
    shutil.move(root / "ucf101", root / "elsewhere")
    line = one_line_error(*run_cli(["evaluate", checkpoints[0], "--data", root, "--workers", "0"], capsys,
                                   monkeypatch)[::2])
    assert "video MoveLeft/v_MoveLeft_g01_c01.mp4 not found: no folder MoveLeft/ in " in line
    assert "(give the video folder with --videos)" in line


def test_data_pointed_at_the_video_folder_is_refused(dataset, checkpoints, tmp_path, capsys, monkeypatch):
    videos = dataset / "videos"  # class folders only: a folder dataset whose train and test are the same videos
    line = one_line_error(*run_cli(["evaluate", checkpoints[0], "--data", videos, "--workers", "0"], capsys,
                                   monkeypatch)[::2])
    assert line.startswith(f"error: {videos}: train and test share 8 of 8 test videos")
    assert "--allow-overlap" in line
    code, stdout, err = run_cli(["evaluate", checkpoints[0], "--data", videos, "--workers", "0", "--allow-overlap"],
                                capsys, monkeypatch)
    assert code == 0, err
    out = tmp_path / "run"
    line = one_line_error(*run_cli(["train", videos, "-o", out, "--model", "resnet18", "--epochs", "1",
                                    "--size", "32", "--workers", "0"], capsys, monkeypatch)[::2])
    assert line.startswith(f"error: {videos}: train and test share 8 of 8 test videos")
    assert not (out / "last.pt").exists()


# -- train: numbers at the boundary, TOML equivalents, progress in a log ------------------------------------
@pytest.mark.parametrize(("extra", "message"), [
    (["--lr", "nan"], "--lr must be > 0, got nan"),
    (["--lr", "0"], "--lr must be > 0, got 0.0"),
    (["--lr", "inf"], "--lr must be > 0, got inf"),
    (["--epochs", "0"], "--epochs must be >= 1, got 0"),
    (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    (["--size", "-3"], "--size must be >= 1, got -3"),
    (["--segments", "0"], "--segments must be >= 1, got 0"),
    (["--frames", "0"], "--frames must be >= 1, got 0"),
    (["--workers", "-1"], "--workers must be >= 0, got -1"),
    (["--seed", "-1"], "--seed must be >= 0, got -1"),
    (["--split", "0"], "--split must be >= 1, got 0"),
    (["--option", "chi"], "--option takes KEY=VALUE, got 'chi'"),
    (["--option", "chi=abc"], "model option chi must be a number (float), got 'abc'"),
    (["--option", "reduction=2.5"], "model option reduction must be a whole number (int), got 2.5"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_train_refuses_bad_numbers(extra, message, dataset, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    line = one_line_error(*run_cli(["train", dataset, "-o", out, *extra], capsys, monkeypatch)[::2])
    assert line == f"error: {message}"
    assert not out.exists()


@pytest.mark.parametrize(("toml", "message"), [
    ("momentum = 1.5", "momentum must be < 1, got 1.5"),
    ("momentum = -0.1", "momentum must be >= 0, got -0.1"),
    ("weight_decay = -1e-4", "weight_decay must be >= 0, got -0.0001"),
    ("weight_decay = nan", "weight_decay must be a finite number, got nan"),
    ('lr = "fast"', "lr must be a number, got 'fast'"),
    ("epochs = 2.5", "epochs must be a whole number, got 2.5"),
    ("lr_steps = [0]", "lr_steps must be >= 1, got 0"),
    ("scale_size = 0", "scale_size must be >= 1, got 0"),
])
def test_train_config_file_numbers(toml, message, dataset, tmp_path, capsys, monkeypatch):
    config = tmp_path / "train.toml"
    config.write_text(f"[train]\n{toml}\n")
    line = one_line_error(*run_cli(["train", dataset, "-o", tmp_path / "run", "--config", config], capsys,
                                   monkeypatch)[::2])
    assert line == f"error: {message}"


def test_train_with_folders_from_the_config_file_logs_progress(dataset, tmp_path, capsys, monkeypatch):
    videos, lists, root = tmp_path / "clips", tmp_path / "lists", tmp_path / "root"
    shutil.copytree(dataset / "videos", videos)
    shutil.copytree(dataset / "ucfTrainTestlist", lists)
    root.mkdir()
    config = tmp_path / "train.toml"
    config.write_text(f'[train]\ndata = "{root}"\nvideos = "{videos}"\nannotations = "{lists}"\nmodel = "resnet18"\n'
                      'epochs = 1\nbatch_size = 3\nsize = 32\nsegments = 2\nworkers = 0\n')
    code, stdout, err = run_cli(["train", "-o", tmp_path / "run", "--config", config], capsys, monkeypatch)
    assert code == 0, err
    assert (tmp_path / "run" / "best.pt").is_file()
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (saved["videos"], saved["annotations"]) == (str(videos), str(lists))
    # Not on a terminal: the epoch's steps and the held-out pass print as plain lines.
    assert "epoch 1/1: 1/2 (50 %" in stdout and "epoch 1/1: 2/2 (100 %" in stdout, stdout
    assert "eval: 2/2 (100 %" in stdout


# -- make-synthetic and extract-flow ------------------------------------------------------------------------
@pytest.mark.parametrize(("extra", "message"), [
    (["--seed", "-1"], "--seed must be >= 0, got -1"),
    (["--classes", "0"], "--classes must be >= 1, got 0"),
    (["--classes", "11"], "--classes must be 1..10"),
    (["--videos-per-class", "1"], "--videos-per-class must be >= 2, got 1"),
    (["--frames", "1"], "--frames must be >= 2, got 1"),
    (["--size", "8"], "--size must be >= 16, got 8"),
    (["--size", "33"], "--size must be an even number >= 16 (yuv420p), got 33"),
    (["--workers", "0"], "--workers must be >= 1, got 0"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_make_synthetic_refuses_bad_numbers(extra, message, tmp_path, capsys, monkeypatch):
    out = tmp_path / "syn"
    line = one_line_error(*run_cli(["make-synthetic", out, *extra], capsys, monkeypatch)[::2])
    assert line.startswith(f"error: {message}"), line
    assert not out.exists()


@pytest.mark.parametrize(("extra", "message"), [
    (["--bound", "0"], "--bound must be > 0, got 0.0"),
    (["--bound", "nan"], "--bound must be > 0, got nan"),
    (["--workers", "0"], "--workers must be >= 1, got 0"),
], ids=lambda v: " ".join(v))
def test_extract_flow_refuses_bad_numbers(extra, message, dataset, tmp_path, capsys, monkeypatch):
    out = tmp_path / "flow"
    line = one_line_error(*run_cli(["extract-flow", dataset / "videos", out, *extra], capsys, monkeypatch)[::2])
    assert line == f"error: {message}"
    assert not out.exists()


def test_training_flow_on_videos_says_which_command_makes_the_flow(dataset, tmp_path, capsys, monkeypatch):
    args = ["train", dataset, "-o", tmp_path / "run", "--model", "resnet18", "--modality", "flow", "--epochs", "1",
            "--size", "32", "--workers", "0"]
    line = one_line_error(*run_cli(args, capsys, monkeypatch)[::2])
    assert line.endswith(": flow input needs a frame folder of flow_x/flow_y JPEGs; run aarm-export extract-flow")


def test_train_keeps_files_in_its_out_folder_without_force(dataset, tmp_path, capsys, monkeypatch):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.json").write_text('{"the user": "own file"}\n')
    before = digest(out / "config.json")
    line = one_line_error(*run_cli(["train", dataset, "-o", out, "--model", "resnet18", "--epochs", "1",
                                    "--size", "32", "--workers", "0"], capsys, monkeypatch)[::2])
    assert line.startswith(f"error: {out} holds config.json, which training would overwrite; pass --resume")
    assert digest(out / "config.json") == before and sorted(p.name for p in out.iterdir()) == ["config.json"]
