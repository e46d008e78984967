"""3D-ResNet-18 (Hara et al. 2018): 7x7x7 stem with temporal stride 1, basic 3x3x3 blocks, shortcut B.

The blocks are the 2D ResNet's (aarm.backbones.resnet) built from 3D convs (CONV3D), so attention sits in every
block after the last BN, before the addition, and the state-dict keys follow the same layout. Input
(N, C_in, T, H, W) (16 x 112 x 112 as Hara et al. train it; any T, H, W >= 8 x 32 x 32 works); output logits
(N, num_classes).
"""

import torch
from torch import nn

from aarm.backbones.resnet import AttentionFactory, BasicBlock, Convs, make_stages


def conv3x3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv3d:
    return nn.Conv3d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def conv1x1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv3d:
    return nn.Conv3d(in_planes, out_planes, 1, stride=stride, bias=False)


CONV3D = Convs(conv3x3x3, conv1x1x1, nn.BatchNorm3d)


class ResNet3D18(nn.Module):
    def __init__(
        self, *, num_classes: int, in_channels: int, attention: AttentionFactory, head: nn.Module, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, 64, 7, stride=(1, 2, 2), padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(3, stride=2, padding=1)
        self.layer1, self.layer2, self.layer3, self.layer4 = make_stages(BasicBlock, [2, 2, 2, 2], attention, CONV3D)
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(512, num_classes)
        self.vcm = head
        for name, m in self.named_modules():
            if isinstance(m, nn.Conv3d) and ".attn" not in name:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, T, H, W) -> (N, 512, T/8, H/32, W/32), rounded up."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x)).flatten(1)
        return self.vcm(self.fc(self.dropout(x)))
