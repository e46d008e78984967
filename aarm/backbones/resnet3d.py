"""3D-ResNet-18 (Hara et al. 2018): 7x7x7 stem with temporal stride 1, basic 3x3x3 blocks, shortcut B.

Attention sits in every block after the last BN, before the addition. Input (N, C_in, T, H, W)
(16 x 112 x 112 as Hara et al. train it; any T, H, W >= 8 x 32 x 32 works); output logits (N, num_classes).
"""

from collections.abc import Callable

import torch
from torch import nn

AttentionFactory = Callable[[int], nn.Module]


class BasicBlock3d(nn.Module):
    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None, attention: AttentionFactory
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv3d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.attn = attention(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.attn(self.bn2(self.conv2(out)))
        return self.relu(out + identity)


class ResNet3D18(nn.Module):
    def __init__(
        self, *, num_classes: int, in_channels: int, attention: AttentionFactory, head: nn.Module, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv3d(in_channels, 64, 7, stride=(1, 2, 2), padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, 1, attention)
        self.layer2 = self._make_layer(128, 2, attention)
        self.layer3 = self._make_layer(256, 2, attention)
        self.layer4 = self._make_layer(512, 2, attention)
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(512, num_classes)
        self.vcm = head
        for name, m in self.named_modules():
            if isinstance(m, nn.Conv3d) and ".attn" not in name:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, planes: int, stride: int, attention: AttentionFactory) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv3d(self.inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm3d(planes)
            )
        first = BasicBlock3d(self.inplanes, planes, stride, downsample, attention)
        self.inplanes = planes
        return nn.Sequential(first, BasicBlock3d(planes, planes, 1, None, attention))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, T, H, W) -> (N, 512, T/8, H/32, W/32), rounded up."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x)).flatten(1)
        return self.vcm(self.fc(self.dropout(x)))
