"""VCM, the classification attention module (eq. 6)."""

import torch
from torch import nn


class VCM(nn.Module):
    """z' = sigmoid(W z + b) * z on the output of the last fully connected layer; W is u x u.

    Input and output (N, u).
    """

    def __init__(self, units: int) -> None:
        super().__init__()
        self.fc = nn.Linear(units, units)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc(z)) * z
