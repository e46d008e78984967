"""Squeeze-and-excitation (Hu et al. 2018), for the paper's comparisons."""

import torch
from torch import nn

from aarm.attention.layers import conv_nd, hidden_channels


class SE(nn.Module):
    """Y = sigmoid(W2 relu(W1 avgpool(M))) * M. Input and output (N, C, *S)."""

    def __init__(self, channels: int, *, reduction: int = 16, dims: int = 2) -> None:
        super().__init__()
        conv = conv_nd(dims)
        hidden = hidden_channels(channels, reduction)
        self.fc1 = conv(channels, hidden, 1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = conv(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=tuple(range(2, x.dim())), keepdim=True)
        return torch.sigmoid(self.fc2(self.relu(self.fc1(pooled)))) * x
