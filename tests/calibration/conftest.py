"""Calibration tests use the shared `tiny` AARM ResNet-18 TSN (K = 2, 32x32, five classes, checkpoint + ONNX)
and `videos` (its five synthetic classes, one train and one test video each) from tests/shared_fixtures.py,
single-threaded PyTorch throughout, and:

- `probe`: a three-layer CNN trained to 100% on the ten synthetic videos, with a dead channel of constant
  value 1000 after its first conv: harmless in float, it stretches that tensor's int8 range so far that
  the real channels quantize to almost nothing, unless the conv that reads it stays in float. A known
  sensitive layer to test the search against.
"""

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from shared_fixtures import export_cache, one_torch_thread, tiny, videos  # noqa: F401 (fixtures)
from torch import nn

from aarm.data.annotations import load_split
from aarm.data.preprocessing import Preprocessing
from calibration.quantize import CalibrationConfig
from calibration.reader import ClipReader, ClipSet
from export.onnx_export import export_onnx


def export_probe(model: nn.Module, out: Path, *, classes: list[str], preprocessing: Preprocessing,
                 config: dict) -> Path:
    """ONNX + sidecar through the project's exporter, for a model the registry does not build: `config`
    becomes its `aarm_config` (a 2D TSN model, so no registry look-up)."""
    model.aarm_config = config
    export_onnx(model.eval(), out, classes=classes, preprocessing=preprocessing, trained=True)
    return out


class ProbeNet(nn.Module):
    """(N, K, 3, H, W) -> scores (N, classes): conv-relu-conv-relu-pool-fc per snippet, mean over K."""

    def __init__(self, classes: int, width: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width + 1, 3, padding=1)
        self.conv2 = nn.Conv2d(width + 1, width, 3, padding=1, stride=2)
        self.fc = nn.Linear(width, classes)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = x.shape[1]
        y = self.relu(self.conv2(self.relu(self.conv1(x.flatten(0, 1)))))
        y = self.fc(y.mean(dim=(2, 3)))
        return y.view(-1, k, y.shape[-1]).mean(dim=1)


@dataclass
class Probe:
    onnx: Path
    data: Path  # class folders, no split: train and test are the same ten videos


@pytest.fixture(scope="session")
def probe(videos: Path, tmp_path_factory: pytest.TempPathFactory) -> Probe:  # noqa: F811 (the fixture)
    torch.manual_seed(0)
    data = videos / "videos"  # <class>/<video>: the folder layout, every subset is every video
    prep = Preprocessing(layout="NKCHW", size=32, scale_size=36, segments=2)
    split = load_split(data, subset="test")
    reader = ClipReader(ClipSet(split.records, split.classes), prep, "input")
    x, y = torch.from_numpy(reader.arrays()), torch.from_numpy(reader.labels)
    net = ProbeNet(len(split.classes))
    with torch.no_grad():  # the dead channel: weight 0, bias 0 while training
        net.conv1.weight[-1].zero_()
        net.conv1.bias[-1].zero_()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(300):
        loss = nn.functional.cross_entropy(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if (net(x).argmax(1) == y).all() and loss.item() < 0.05:
            break
    net.eval()
    with torch.no_grad():
        assert (net(x).argmax(1) == y).all(), "the probe network must fit its ten videos"
        net.conv1.weight[-1].zero_()
        net.conv1.bias[-1].fill_(1000.0)  # constant 1000 after the ReLU ...
        net.conv2.weight[:, -1].zero_()  # ... that nothing reads: float scores are unchanged
    d = tmp_path_factory.mktemp("probe")
    config = {"name": "probe", "num_classes": len(split.classes), "attention": "none", "in_channels": 3,
              "options": {"segments": 2}}
    path = export_probe(net, d / "probe.onnx", classes=split.classes, preprocessing=prep, config=config)
    return Probe(path, data)


@pytest.fixture(scope="module")
def users_config(videos, tmp_path_factory) -> CalibrationConfig:  # noqa: F811 (the shared fixture)
    """The users' path settings: cpu target, no budget, a calibration cache that every run in the test module
    shares (so they share ranges)."""
    cache = tmp_path_factory.mktemp("users_cache") / "calibration.json"
    return CalibrationConfig(data=videos, clips=4, method="minmax", target="cpu", max_drop=None, eval_clips=5,
                             cache=cache)
