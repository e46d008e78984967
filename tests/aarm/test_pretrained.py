"""torchvision state-dict compatibility and ImageNet-weight loading (fixtures: tests/fixtures/torchvision)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import aarm
from aarm.errors import CheckpointError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "torchvision"
sys.path.insert(0, str(FIXTURES))
from make_fixtures import fill_state_dict, fixed_input  # noqa: E402

LAYOUT = json.loads((FIXTURES / "layout.json").read_text())


def backbone(name: str, attention: str = "none", **kw):
    return aarm.create_model(name, num_classes=1000, attention=attention, **kw).backbone


@pytest.mark.parametrize("name", sorted(LAYOUT))
def test_state_dict_layout_matches_torchvision(name):
    with torch.device("meta"):
        ours = {k: list(v.shape) for k, v in backbone(name).state_dict().items()}
    assert ours == LAYOUT[name]


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "vgg16"])
def test_torchvision_weights_give_torchvision_outputs(name, tmp_path):
    path = tmp_path / f"{name}.pth"
    torch.save(fill_state_dict({k: torch.empty(s) for k, s in LAYOUT[name].items()}), path)
    model = backbone(name)
    report = aarm.load_pretrained(model, path)
    assert not report.fresh and not report.skipped and not report.adapted
    model.load_state_dict(torch.load(path, weights_only=True), strict=True)  # no missing or unexpected keys
    with torch.no_grad():
        logits = model.eval()(fixed_input()).numpy()
    expected = np.load(FIXTURES / f"{name}_logits.npy")
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


@pytest.fixture
def imagenet_resnet18(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(fill_state_dict({k: torch.empty(s) for k, s in LAYOUT["resnet18"].items()}), path)
    return path


def test_load_into_aarm_variant_leaves_attention_fresh(imagenet_resnet18):
    model = aarm.create_model("resnet18", num_classes=101, attention="aarm")
    report = aarm.load_pretrained(model, imagenet_resnet18)
    assert report.skipped == ["fc.weight", "fc.bias"]  # 1000-class head does not fit 101 classes
    assert report.fresh and all(".attn." in k or k.startswith(("vcm.", "fc.")) for k in report.fresh)
    assert torch.equal(model.backbone.layer1[0].conv1.weight, torch.load(imagenet_resnet18)["layer1.0.conv1.weight"])


def test_flow_stream_first_conv_is_channel_averaged(imagenet_resnet18):
    model = aarm.create_model("resnet18", num_classes=101, attention="aarm", in_channels=20)
    report = aarm.load_pretrained(model, imagenet_resnet18)
    assert report.adapted == ["conv1.weight"]
    rgb = torch.load(imagenet_resnet18)["conv1.weight"]
    w = model.backbone.conv1.weight
    assert w.shape == (64, 20, 7, 7)
    assert torch.allclose(w, rgb.mean(1, keepdim=True).expand(-1, 20, -1, -1))


def test_wrong_architecture_and_unsafe_files_are_refused(imagenet_resnet18, tmp_path):
    with pytest.raises(CheckpointError, match="not in this model"):
        aarm.load_pretrained(aarm.create_model("vgg16", num_classes=5), imagenet_resnet18)
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {"a": torch.zeros(1)}, "hook": Path("/")}, evil)  # needs code to unpickle
    with pytest.raises(CheckpointError, match="not a safe weights file"):
        aarm.load_pretrained(aarm.create_model("resnet18", num_classes=5), evil)
    with pytest.raises(CheckpointError, match="not found"):
        aarm.load_pretrained(aarm.create_model("resnet18", num_classes=5), tmp_path / "missing.pth")


def test_an_aarm_checkpoint_of_a_plain_model_initialises_an_aarm_model(tmp_path):
    """The paper's protocol with our own pretraining: a plain TSN checkpoint becomes an AARM model's backbone."""
    from aarm.checkpoint import save_checkpoint
    from aarm.data.preprocessing import Preprocessing

    plain = aarm.create_model("resnet18", num_classes=10, attention="none")
    path = tmp_path / "plain.pt"
    save_checkpoint(path, plain, classes=[str(i) for i in range(10)],
                    preprocessing=Preprocessing.for_model(plain.aarm_config, size=32))
    model = aarm.create_model("resnet18", num_classes=4, attention="aarm")
    report = aarm.load_pretrained(model, path)
    assert report.skipped == ["fc.weight", "fc.bias"]
    assert torch.equal(model.backbone.layer2[1].conv2.weight, plain.backbone.layer2[1].conv2.weight)
