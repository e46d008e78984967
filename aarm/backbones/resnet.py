"""2D ResNet-18/34/50/101/152 with torchvision's state-dict layout and a pluggable attention module.

Attention sits in every residual block after the last BN of the residual branch, before the addition
(key prefix `layerX.Y.attn`; absent for attention `none`). VCM, when enabled, follows `fc`.
The blocks take their convolutions and norms from a `Convs` builder, as torchvision's video ResNet takes its
conv builder: CONV2D here, CONV3D for the 3D-ResNet (aarm.backbones.resnet3d).
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

AttentionFactory = Callable[[int], nn.Module]


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


@dataclass(frozen=True)
class Convs:
    """The layers a residual block is built from; one set per spatial dimensionality."""

    kxk: Callable[[int, int, int], nn.Module]  # (in, out, stride) -> 3x3 (or 3x3x3) conv, padding 1, no bias
    pointwise: Callable[[int, int, int], nn.Module]  # (in, out, stride) -> 1x1 (or 1x1x1) conv, no bias
    norm: Callable[[int], nn.Module]  # channels -> batch norm


CONV2D = Convs(conv3x3, conv1x1, nn.BatchNorm2d)


class BasicBlock(nn.Module):
    """Two kxk convs; input (N, inplanes, *S), output (N, planes, *S / stride)."""

    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None, attention: AttentionFactory,
        convs: Convs = CONV2D,
    ) -> None:
        super().__init__()
        self.conv1 = convs.kxk(inplanes, planes, stride)
        self.bn1 = convs.norm(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = convs.kxk(planes, planes, 1)
        self.bn2 = convs.norm(planes)
        self.attn = attention(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.attn(self.bn2(self.conv2(out)))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1, kxk, 1x1 convs; input (N, inplanes, *S), output (N, 4 * planes, *S / stride)."""

    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None, attention: AttentionFactory,
        convs: Convs = CONV2D,
    ) -> None:
        super().__init__()
        width = planes
        self.conv1 = convs.pointwise(inplanes, width, 1)
        self.bn1 = convs.norm(width)
        self.conv2 = convs.kxk(width, width, stride)
        self.bn2 = convs.norm(width)
        self.conv3 = convs.pointwise(width, planes * self.expansion, 1)
        self.bn3 = convs.norm(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.attn = attention(planes * self.expansion)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.attn(self.bn3(self.conv3(out)))
        return self.relu(out + identity)


Block = type[BasicBlock] | type[Bottleneck]


def make_stages(block: Block, layers: list[int], attention: AttentionFactory, convs: Convs) -> list[nn.Sequential]:
    """torchvision's `layer1`..`layer4` after a 64-channel stem: stage i has layers[i] blocks of 64 * 2^i planes,
    the first with stride 2 (but in stage 1) and, where the shape changes, a pointwise conv + norm shortcut
    (`downsample`). The last stage outputs 512 * block.expansion channels."""
    stages, inplanes = [], 64
    for i, blocks in enumerate(layers):
        planes, stride = 64 * 2**i, 1 if i == 0 else 2
        outplanes = planes * block.expansion
        downsample = None
        if stride != 1 or inplanes != outplanes:
            downsample = nn.Sequential(convs.pointwise(inplanes, outplanes, stride), convs.norm(outplanes))
        stage = [block(inplanes, planes, stride, downsample, attention, convs)]
        stage += [block(outplanes, planes, 1, None, attention, convs) for _ in range(1, blocks)]
        stages.append(nn.Sequential(*stage))
        inplanes = outplanes
    return stages


class ResNet(nn.Module):
    """Input (N, C_in, H, W); output logits (N, num_classes)."""

    def __init__(
        self,
        block: Block,
        layers: list[int],
        *,
        num_classes: int,
        in_channels: int,
        attention: AttentionFactory,
        head: nn.Module,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1, self.layer2, self.layer3, self.layer4 = make_stages(block, layers, attention, CONV2D)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        self.vcm = head
        for name, m in self.named_modules():
            if isinstance(m, nn.Conv2d) and ".attn" not in name:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d) and ".attn" not in name:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) -> the last stage's map (N, 512 * expansion, H/32, W/32)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x)).flatten(1)
        return self.vcm(self.fc(self.dropout(x)))


RESNET_LAYOUTS: dict[str, tuple[Block, list[int]]] = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
    "resnet101": (Bottleneck, [3, 4, 23, 3]),
    "resnet152": (Bottleneck, [3, 8, 36, 3]),
}
