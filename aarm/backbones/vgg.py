"""VGG-16 with torchvision's state-dict layout (`features.<i>`, `classifier.<i>`) and stage attention.

Attention follows the last conv (and its ReLU) of each of the five stages, before the stage's max-pool.
It lives in `attn.<stage>` beside `features`, so torchvision's feature indices stay as they are.
"""

from collections.abc import Callable

import torch
from torch import nn

VGG16_CFG: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGG16(nn.Module):
    """Input (N, C_in, H, W); output logits (N, num_classes)."""

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        attention: Callable[[int], nn.Module],
        head: nn.Module,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        stage_channels: list[int] = []
        channels = in_channels
        for v in VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                stage_channels.append(channels)
            else:
                layers += [nn.Conv2d(channels, int(v), 3, padding=1), nn.ReLU(inplace=True)]
                channels = int(v)
        self.features = nn.Sequential(*layers)
        self.attn = nn.ModuleList(attention(c) for c in stage_channels)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(True),
            nn.Dropout(dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(True),
            nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )
        self.vcm = head
        for m in self.features.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        for m in self.classifier.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def features_map(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) -> (N, 512, H/32, W/32)."""
        stage = 0
        for layer in self.features:
            if isinstance(layer, nn.MaxPool2d):
                x = self.attn[stage](x)
                stage += 1
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features_map(x)).flatten(1)
        return self.vcm(self.classifier(x))
