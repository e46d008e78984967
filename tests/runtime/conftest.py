"""Small artifacts for the runtime tests: a ResNet-18 TSN (K = 2, 32x32) with AARM as checkpoint and ONNX."""

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from runtime_artifacts import export_artifact

import aarm
from aarm.checkpoint import save_checkpoint
from aarm.data.preprocessing import Preprocessing
from aarm.data.synthetic import list_classes, make_synthetic
from runtime.artifact import read_sidecar, sidecar_path, write_sidecar

CLASSES = list_classes()[:5]  # the synthetic dataset's, so its labels mean the same to the model


@dataclass
class Tiny:
    dir: Path
    model: torch.nn.Module
    preprocessing: Preprocessing
    classes: list[str]
    checkpoint: Path
    onnx: Path


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Single-threaded PyTorch: on the shared 2-core machine extra threads only contend (and slow down)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def export_cache(pytestconfig: pytest.Config) -> Path:
    """Exported test graphs kept between sessions in pytest's cache (`--cache-clear` empties it)."""
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
    """A synthetic dataset with the tiny model's five classes: two 8-frame 32x32 videos per class."""
    root = tmp_path_factory.mktemp("synthetic") / "data"
    make_synthetic(root, classes=len(CLASSES), videos_per_class=2, frames=8, size=32, seed=0)
    return root
