"""Checkpoints load with weights_only=True and rebuild the exact model; anything else is refused."""

import pickle

import pytest
import torch

import aarm
from aarm.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from aarm.data.preprocessing import Preprocessing
from aarm.errors import CheckpointError


def _model():
    torch.manual_seed(0)
    return aarm.create_model("resnet18", num_classes=3, attention="aarm", segments=2)


def test_round_trip(tmp_path):
    model = _model().eval()
    pre = Preprocessing.for_model(model.aarm_config, size=32)
    path = save_checkpoint(tmp_path / "m.pt", model, classes=["a", "b", "c"], preprocessing=pre, meta={"epoch": 2})
    assert isinstance(torch.load(path, weights_only=True), dict)
    ckpt = load_checkpoint(path)
    assert ckpt.classes == ["a", "b", "c"] and ckpt.preprocessing == pre and ckpt.meta == {"epoch": 2}
    assert not ckpt.model.training
    x = torch.randn(2, 2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(ckpt.model(x), model(x))


def test_refuses_code_carrying_and_foreign_files(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"format": "aarm-checkpoint", "x": Payload()}))
    with pytest.raises(CheckpointError, match="weights-only"):
        read_checkpoint(evil)
    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.zeros(1)}, plain)
    with pytest.raises(CheckpointError, match="not an aarm checkpoint"):
        read_checkpoint(plain)
    text = tmp_path / "text.pt"
    text.write_bytes(b"hello\n")
    with pytest.raises(CheckpointError, match=r"^.*text\.pt is not a PyTorch checkpoint$"):
        read_checkpoint(text)
    noise = tmp_path / "noise.pt"
    noise.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(CheckpointError, match=r"noise\.pt: refused, not a weights-only PyTorch checkpoint \(Unsup"):
        read_checkpoint(noise)


def test_class_count_must_match(tmp_path):
    model = _model()
    with pytest.raises(CheckpointError, match="2 class names"):
        save_checkpoint(tmp_path / "m.pt", model, classes=["a", "b"],
                        preprocessing=Preprocessing.for_model(model.aarm_config))
    assert not (tmp_path / "m.pt").exists()
