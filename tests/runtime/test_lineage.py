"""Lineage: an artifact's recorded chain of parents leads to the checkpoint parity compares it with."""

import shutil
from pathlib import Path

import onnx
import pytest
from onnx import numpy_helper
from runtime_artifacts import derive_artifact
from typer.testing import CliRunner

from aarm.checkpoint import save_checkpoint
from export.cli import app
from runtime.artifact import file_sha256, read_sidecar, sidecar_path, write_sidecar
from runtime.lineage import LineageError, check_lineage


def _copy_artifact(src: Path, dst: Path) -> Path:
    shutil.copy(src, dst)
    shutil.copy(sidecar_path(src), sidecar_path(dst))
    return dst


def _chain(tiny, root: Path) -> dict[str, Path]:
    """root/best.pt -> model.onnx (export) -> model.opt.onnx -> model.fp16.onnx (two re-signed derivations)."""
    root.mkdir(parents=True, exist_ok=True)
    ckpt = Path(shutil.copy(tiny.checkpoint, root / "best.pt"))
    exported = _copy_artifact(tiny.onnx, root / "model.onnx")
    write_sidecar(exported, read_sidecar(exported), parent=ckpt)
    opt = derive_artifact(exported, onnx.load(str(exported)), root / "model.opt.onnx")
    last = derive_artifact(opt, onnx.load(str(opt)), root / "model.last.onnx", stage="convert")
    return {"ckpt": ckpt, "onnx": exported, "opt": opt, "last": last}


@pytest.fixture
def chain(tiny, tmp_path) -> dict[str, Path]:
    return _chain(tiny, tmp_path / "run")


def test_an_artifact_descends_from_its_checkpoint(chain):
    links = check_lineage(chain["last"], chain["ckpt"])
    assert [link.path for link in links] == [chain["last"], chain["opt"], chain["onnx"], chain["ckpt"]]
    assert [link.stage for link in links] == ["convert", "optimize", "export", None]
    assert links[-1].sha256 == file_sha256(chain["ckpt"])
    assert len(check_lineage(chain["ckpt"], chain["ckpt"])) == 1  # a checkpoint is its own reference


def test_another_checkpoint_is_not_an_ancestor(tiny, chain, tmp_path):
    other = save_checkpoint(tmp_path / "other.pt", tiny.model, classes=tiny.classes, preprocessing=tiny.preprocessing,
                            meta={"note": "same weights, another file"})
    with pytest.raises(LineageError, match=r"model.last.onnx does not descend from other.pt: its chain ends at "
                                           r"checkpoint best.pt"):
        check_lineage(chain["last"], other)


def test_a_changed_parent_names_the_broken_link(chain):
    model = onnx.load(str(chain["opt"]))
    init = model.graph.initializer[0]
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 1.05, init.name))
    onnx.save(model, str(chain["opt"]))
    write_sidecar(chain["opt"], read_sidecar(chain["opt"], verify=False), parent=chain["onnx"])  # re-signed
    with pytest.raises(LineageError, match="^model.last.onnx -> model.opt.onnx: parent's sha256 differs from the "
                                           "one recorded"):
        check_lineage(chain["last"], chain["ckpt"])


def test_a_missing_parent_is_named(chain):
    chain["opt"].unlink()
    with pytest.raises(LineageError, match="^model.last.onnx -> model.opt.onnx: parent file .*model.opt.onnx is "
                                           "missing"):
        check_lineage(chain["last"], chain["ckpt"])


def test_a_parent_without_sidecar_breaks_the_chain(chain):
    sidecar_path(chain["opt"]).unlink()
    with pytest.raises(LineageError, match="^model.last.onnx -> model.opt.onnx: .*no sidecar"):
        check_lineage(chain["last"], chain["ckpt"])


def test_a_chain_without_a_root_parent_does_not_descend(tiny, chain, tmp_path):
    orphan = _copy_artifact(tiny.onnx, tmp_path / "orphan.onnx")
    sc = read_sidecar(orphan)
    sc.parent = sc.parent_sha256 = None
    write_sidecar(orphan, sc)
    child = derive_artifact(orphan, onnx.load(str(orphan)), tmp_path / "child.onnx")
    with pytest.raises(LineageError, match="child.onnx does not descend from best.pt: its chain ends at orphan.onnx, "
                                           "which records no parent"):
        check_lineage(child, chain["ckpt"])


def test_a_moved_run_folder_still_resolves_its_parents(tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _chain(tiny, Path("run"))  # parents recorded as relative paths
    shutil.move("run", tmp_path / "moved")
    links = check_lineage(tmp_path / "moved" / "model.last.onnx", tmp_path / "moved" / "best.pt")
    assert [link.path.name for link in links] == ["model.last.onnx", "model.opt.onnx", "model.onnx", "best.pt"]



def test_parity_command_checks_lineage_unless_told_not_to(tiny, chain, tmp_path):
    other = save_checkpoint(tmp_path / "other.pt", tiny.model, classes=tiny.classes, preprocessing=tiny.preprocessing,
                            meta={"note": "same weights, another file"})
    base = ["parity", str(chain["opt"]), "--reference", str(other), "--samples", "4", "--threads", "1"]
    res = CliRunner().invoke(app, base)
    assert isinstance(res.exception, LineageError), res.output
    assert "does not descend from other.pt" in str(res.exception)
    res = CliRunner().invoke(app, [*base, "--no-lineage"])
    assert res.exit_code == 0, res.output  # the same weights: the comparison itself holds
