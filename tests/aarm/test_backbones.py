"""Where the attention sits in every backbone, and checkpoints that keep loading into the same network.

Placement (DESIGN.md; the paper's sections 3 and 4.1: CAM and STAM follow the convolutional layers of each
block and their output is the next layer's input): in a residual block (ResNet basic and bottleneck, 3D-ResNet) the
attention reads the last BN's output and its output is what is added to the shortcut; in VGG-16 and C3D it
reads each stage's last conv (after its ReLU) and its output is what the stage's max-pool reads. Hooks record
each module's input and output in one forward pass and the test checks them against each other.
"""

import hashlib
import zlib

import pytest
import torch
from torch import nn

import aarm
from aarm.attention import AARMBlock
from aarm.backbones import C3D, VGG16, BasicBlock, Bottleneck
from aarm.models import get_spec


def build(name: str, attention: str = "aarm", **options) -> nn.Module:
    torch.manual_seed(0)
    if get_spec(name).dims == 2:
        options.setdefault("segments", 2)
    return aarm.create_model(name, num_classes=5, attention=attention, **options).eval()


def small_input(name: str) -> torch.Tensor:
    """(1, K=2, 3, 32, 32) for 2D models, (1, 3, 16, 32, 32) for 3D ones (C3D's features take it; its fc6 not)."""
    g = torch.Generator().manual_seed(1)
    return torch.randn((1, 2, 3, 32, 32) if get_spec(name).dims == 2 else (1, 3, 16, 32, 32), generator=g)


def run(model: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        model.features(x) if isinstance(model, C3D) else model(x)


class Recorder:
    """Forward hooks that keep a copy of a module's first input and its output, by key (each module runs once)."""

    def __init__(self) -> None:
        self.inputs: dict[object, torch.Tensor] = {}
        self.outputs: dict[object, torch.Tensor] = {}
        self.handles: list[torch.utils.hooks.RemovableHandle] = []

    def watch(self, key: object, module: nn.Module) -> None:
        def hook(_: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            assert key not in self.outputs, f"{key} ran twice"
            self.inputs[key], self.outputs[key] = inputs[0].detach().clone(), output.detach().clone()

        self.handles.append(module.register_forward_hook(hook))

    def watch_input(self, key: object, module: nn.Module) -> None:  # before the module runs (in-place ReLUs)
        self.handles.append(module.register_forward_pre_hook(
            lambda _, inputs: self.inputs.__setitem__(key, inputs[0].detach().clone())))


def assert_aarm_reads(attn: nn.Module, rec: Recorder) -> None:
    """Parallel fusion: CAM and STAM both read the attention's input (eq. 1); sequential: STAM reads CAM's map."""
    assert isinstance(attn, AARMBlock)
    x = rec.inputs[attn]
    assert torch.equal(rec.inputs[attn.cam], x)
    stam_reads = x if attn.fuse is not None else rec.outputs[attn.cam] * x
    assert torch.equal(rec.inputs[attn.stam], stam_reads)


def last_bn(block: BasicBlock | Bottleneck) -> nn.Module:
    return block.bn3 if isinstance(block, Bottleneck) else block.bn2


# Every residual backbone (basic, bottleneck, 3D basic) with AARM; SE and CBAM go in the same place.
RESIDUAL = [(n, "aarm") for n in aarm.list_models() if n.startswith("resnet")]
RESIDUAL += [(n, a) for n in ("resnet18", "resnet50") for a in ("se", "cbam")]


@pytest.mark.parametrize(("name", "attention"), RESIDUAL)
def test_attention_sits_between_the_last_bn_and_the_residual_addition(name, attention):
    model = build(name, attention)
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock | Bottleneck)]
    expected = {"resnet18": 8, "resnet34": 16, "resnet50": 16, "resnet101": 33, "resnet152": 50, "resnet3d18": 8}
    assert len(blocks) == expected[name]
    rec = Recorder()
    for block in blocks:
        parts = [block, last_bn(block), block.attn, block.downsample]
        parts += [block.attn.cam, block.attn.stam] if attention == "aarm" else []
        for module in parts:
            if module is not None:
                rec.watch(module, module)
    run(model, small_input(name))
    for i, block in enumerate(blocks):
        assert torch.equal(rec.inputs[block.attn], rec.outputs[last_bn(block)]), f"block {i}: attention input"
        identity = rec.inputs[block] if block.downsample is None else rec.outputs[block.downsample]
        added = torch.relu(rec.outputs[block.attn] + identity)
        assert torch.equal(rec.outputs[block], added), f"block {i}: the attention's output is not what is added"
        assert not torch.allclose(rec.outputs[block.attn], rec.inputs[block.attn]), "attention changed nothing"
        if attention == "aarm":
            assert_aarm_reads(block.attn, rec)


def stages(model: nn.Module) -> list[tuple[nn.Module, nn.Module, nn.Module]]:
    """(last conv, attention, max-pool) of each of the five stages of VGG-16 (under TSN) or C3D."""
    if isinstance(model, C3D):
        convs = [model.conv1, model.conv2, model.conv3b, model.conv4b, model.conv5b]
        return list(zip(convs, model.attn, [model.pool1, model.pool2, model.pool3, model.pool4, model.pool5],
                        strict=True))
    vgg = model.backbone
    assert isinstance(vgg, VGG16)
    layers = list(vgg.features)
    pools = [i for i, m in enumerate(layers) if isinstance(m, nn.MaxPool2d)]
    assert all(isinstance(layers[i - 2], nn.Conv2d) and isinstance(layers[i - 1], nn.ReLU) for i in pools)
    return [(layers[i - 2], attn, layers[i]) for i, attn in zip(pools, vgg.attn, strict=True)]


@pytest.mark.parametrize("name", ["vgg16", "c3d"])
def test_attention_sits_between_each_stages_last_conv_and_its_pooling(name):
    model = build(name)
    found = stages(model)
    assert len(found) == 5
    rec = Recorder()
    for conv, attn, pool in found:
        for module in (conv, attn, attn.cam, attn.stam):
            rec.watch(module, module)
        rec.watch_input(pool, pool)
    run(model, small_input(name))
    for i, (conv, attn, pool) in enumerate(found):
        assert torch.equal(rec.inputs[attn], torch.relu(rec.outputs[conv])), f"stage {i + 1}: attention input"
        assert torch.equal(rec.inputs[pool], rec.outputs[attn]), f"stage {i + 1}: the pooling reads no attention"
        assert not torch.allclose(rec.outputs[attn], rec.inputs[attn]), "attention changed nothing"
        assert_aarm_reads(attn, rec)


def test_sequential_fusion_feeds_stam_the_channel_refined_map():
    model = build("resnet18", fusion="sequential")
    attn = model.backbone.layer2[0].attn
    rec = Recorder()
    for module in (attn, attn.cam, attn.stam):
        rec.watch(module, module)
    run(model, small_input("resnet18"))
    assert_aarm_reads(attn, rec)


# -- checkpoints: the state dict's layout and what it computes ----------------------------------------------


def fill(model: nn.Module) -> nn.Module:
    """Load weights drawn per state-dict key (a generator seeded with the key's CRC-32), independent of how the
    modules are built or initialised: conv/linear weights normal with variance 2 / fan_in, norm scales 1 and
    running variances 1 plus (the latter: plus the magnitude of) a normal of std 0.1, biases and means normal
    with std 0.1."""
    state = {}
    for key, t in model.state_dict().items():
        if not t.is_floating_point():
            state[key] = t
            continue
        noise = torch.randn(t.shape, generator=torch.Generator().manual_seed(zlib.crc32(key.encode())))
        if t.dim() >= 2:
            state[key] = noise * (2.0 / t[0].numel()) ** 0.5
        elif key.endswith("running_var"):
            state[key] = 1 + 0.1 * noise.abs()
        elif key.endswith("weight"):
            state[key] = 1 + 0.1 * noise
        else:
            state[key] = 0.1 * noise
    model.load_state_dict(state)
    return model


def layout_digest(model: nn.Module) -> str:
    """sha256 of the state dict's `key shape` lines, in order."""
    lines = "\n".join(f"{k} {tuple(v.shape)}" for k, v in model.state_dict().items())
    return hashlib.sha256(lines.encode()).hexdigest()[:16]


# Recorded from the code before the 3D-ResNet took the 2D blocks (commit a4bd174): the state dict's layout
# and the logits of `fill`ed weights on `small_input`-like inputs (2 samples), AARM, 5 classes.
CHECKPOINTS = {
    "resnet18": ("001ab257b7138cf8", [[-0.0250183, -2.212023, 2.318558, -2.05163e-10, 6.601659],
                                      [-0.002416392, -0.02247875, 2.558364, -5.018917e-10, 0.9560117]]),
    "resnet50": ("835dcd900a1c9ecd", [[-139.8313, 0.0, 73.56148, 169.5726, 60.45626],
                                      [-147.9181, 0.0, 90.90386, 169.2517, 18.6144]]),
    "resnet3d18": ("a62db3c9c1c3934a", [[0.0002068837, -0.05164474, 0.004573558, 0.01967695, 0.1877174],
                                        [0.0002516871, -1.156068, 0.008202185, 0.06447858, 0.6869971]]),
}


@pytest.mark.parametrize("name", list(CHECKPOINTS))
def test_checkpoints_of_earlier_versions_load_and_compute_the_same(name):
    digest, logits = CHECKPOINTS[name]
    model = fill(build(name))
    assert layout_digest(model) == digest
    g = torch.Generator().manual_seed(2)
    x = torch.randn((2, 2, 3, 32, 32) if get_spec(name).dims == 2 else (2, 3, 8, 32, 32), generator=g)
    with torch.no_grad():
        y = model(x)
    # float32 through 18-50 layers; other CPUs' kernels round differently (about 1e-6 relative): 1e-4 is margin
    torch.testing.assert_close(y, torch.tensor(logits), rtol=1e-4, atol=1e-4 * float(y.abs().max()))


def test_3d_resnet_has_the_2d_resnet18_layout():
    """The keys of ResNet-18 (torchvision's layout); each conv weight has one kernel dimension more."""
    flat, video = build("resnet18", "none").backbone.state_dict(), build("resnet3d18", "none").state_dict()
    assert list(flat) == list(video)
    for key, t in flat.items():
        assert video[key].shape == t.shape or video[key].shape[:-1] == t.shape, key
