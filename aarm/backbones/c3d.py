"""C3D (Tran et al. 2015) with attention after the last conv of each of its five stages, before pooling.

Input (N, C_in, 16, 112, 112), C3D's own clip geometry (the pool5 output must be 512 x 1 x 4 x 4 for fc6);
output logits (N, num_classes).
"""

from collections.abc import Callable

import torch
from torch import nn


class C3D(nn.Module):
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
        self.conv1 = nn.Conv3d(in_channels, 64, 3, padding=1)
        self.pool1 = nn.MaxPool3d((1, 2, 2), (1, 2, 2))
        self.conv2 = nn.Conv3d(64, 128, 3, padding=1)
        self.pool2 = nn.MaxPool3d(2, 2)
        self.conv3a = nn.Conv3d(128, 256, 3, padding=1)
        self.conv3b = nn.Conv3d(256, 256, 3, padding=1)
        self.pool3 = nn.MaxPool3d(2, 2)
        self.conv4a = nn.Conv3d(256, 512, 3, padding=1)
        self.conv4b = nn.Conv3d(512, 512, 3, padding=1)
        self.pool4 = nn.MaxPool3d(2, 2)
        self.conv5a = nn.Conv3d(512, 512, 3, padding=1)
        self.conv5b = nn.Conv3d(512, 512, 3, padding=1)
        self.pool5 = nn.MaxPool3d(2, 2, padding=(0, 1, 1))
        self.attn = nn.ModuleList(attention(c) for c in (64, 128, 256, 512, 512))
        self.fc6 = nn.Linear(8192, 4096)
        self.fc7 = nn.Linear(4096, 4096)
        self.fc8 = nn.Linear(4096, num_classes)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.vcm = head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, 16, 112, 112) -> (N, 512, 1, 4, 4)."""
        r = self.relu
        x = self.pool1(self.attn[0](r(self.conv1(x))))
        x = self.pool2(self.attn[1](r(self.conv2(x))))
        x = self.pool3(self.attn[2](r(self.conv3b(r(self.conv3a(x))))))
        x = self.pool4(self.attn[3](r(self.conv4b(r(self.conv4a(x))))))
        return self.pool5(self.attn[4](r(self.conv5b(r(self.conv5a(x))))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).flatten(1)
        x = self.dropout(self.relu(self.fc6(x)))
        x = self.dropout(self.relu(self.fc7(x)))
        return self.vcm(self.fc8(x))
