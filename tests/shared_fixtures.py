"""Fixtures the runtime and calibration tests share; their conftests import them (pytest finds fixtures by name).

- `one_torch_thread` (autouse there): single-threaded PyTorch, since on the shared 2-core machine extra threads
  only contend.
- `export_cache`: exported test graphs kept between sessions in pytest's cache (`--cache-clear` empties it);
  `export_artifact` exports into it through export.onnx_export, the project's exporter.
- `tiny`: an untrained AARM ResNet-18 TSN (K = 2, 32x32, five classes) saved as a checkpoint and exported
  as ONNX from it (the sidecar names the checkpoint as its parent).
- `videos`: a synthetic dataset with the tiny model's five classes, two 8-frame 32x32 videos per class (UCF101
  layout: one train and one test video each).
"""

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import onnx
import pytest
import torch

import aarm
import export.onnx_export
from aarm.checkpoint import save_checkpoint
from aarm.data.preprocessing import Preprocessing
from aarm.data.synthetic import list_classes, make_synthetic
from runtime.artifact import read_sidecar, sidecar_path, write_sidecar
from runtime.errors import ArtifactError

CLASSES = list_classes()[:5]  # the synthetic dataset's, so its labels mean the same to the model


@dataclass
class Tiny:
    dir: Path
    model: torch.nn.Module
    preprocessing: Preprocessing
    classes: list[str]
    checkpoint: Path
    onnx: Path


def _export_key(model: torch.nn.Module, classes: list[str], preprocessing: Preprocessing) -> str:
    """Everything the exported bytes depend on: exporter source, library versions, config, weights, inputs."""
    digest = hashlib.sha256()
    digest.update(Path(export.onnx_export.__file__).read_bytes())
    digest.update(json.dumps([torch.__version__, onnx.__version__, model.aarm_config, classes,
                              preprocessing.to_dict()], sort_keys=True).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:20]


def export_artifact(
    model: torch.nn.Module, cache: Path, slot: str, *, classes: list[str], preprocessing: Preprocessing
) -> Path:
    """`cache/slot/<key>/model.onnx` (+ sidecar) from export_onnx, reused while the key matches.

    The key covers the exporter's source, torch/onnx versions, the model's config and weights, classes and
    preprocessing. A new export goes to a temporary folder renamed into place (safe against a concurrent
    session) and replaces the slot's older keys. A cached file is used only if its sidecar verifies.
    """
    key = _export_key(model, classes, preprocessing)
    slot_dir = cache / slot
    target = slot_dir / key / "model.onnx"
    if target.is_file():
        try:
            read_sidecar(target, verify=True)
            return target
        except ArtifactError:
            shutil.rmtree(target.parent, ignore_errors=True)
    slot_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=slot_dir))
    try:
        export.onnx_export.export_onnx(model, tmp / "model.onnx", classes=classes, preprocessing=preprocessing,
                                       trained=True)
        try:
            os.rename(tmp, target.parent)
        except OSError:  # another session put the same key in place first
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for old in slot_dir.iterdir():
        if old.name != key and not old.name.startswith("."):
            shutil.rmtree(old, ignore_errors=True)
    read_sidecar(target, verify=True)
    return target


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def export_cache(pytestconfig: pytest.Config) -> Path:
    return Path(pytestconfig.cache.mkdir("aarm-runtime-exports"))


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory, export_cache: Path) -> Tiny:
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("tiny")
    model = aarm.create_model("resnet18", num_classes=len(CLASSES), attention="aarm", segments=2).eval()
    prep = Preprocessing.for_model(model.aarm_config, size=32)
    ckpt = save_checkpoint(d / "model.pt", model, classes=CLASSES, preprocessing=prep)
    cached = export_artifact(model, export_cache, "tiny", classes=CLASSES, preprocessing=prep)
    onnx_path = Path(shutil.copy(cached, d / "model.onnx"))  # a copy: tests may not touch the cache
    shutil.copy(sidecar_path(cached), sidecar_path(onnx_path))
    write_sidecar(onnx_path, read_sidecar(onnx_path), parent=ckpt)  # exported from the model saved as ckpt
    torch.set_num_threads(threads)
    return Tiny(d, model, prep, CLASSES, ckpt, onnx_path)


@pytest.fixture(scope="session")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "data"
    make_synthetic(root, classes=len(CLASSES), videos_per_class=2, frames=8, size=32, seed=0)
    return root
