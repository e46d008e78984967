"""CBAM (Woo et al. 2018), for the paper's comparisons: channel then spatial attention, in sequence."""

import torch
from torch import nn

from aarm.attention.layers import batchnorm_nd, conv_nd, hidden_channels


class CBAM(nn.Module):
    """M_ch = sigmoid(MLP(avgpool M) + MLP(maxpool M)) * M; Y = sigmoid(BN(conv7([avg_c, max_c](M_ch)))) * M_ch.

    The spatial conv is 7x7 in 2D and 7x7x7 in 3D. Input and output (N, C, *S).
    """

    def __init__(self, channels: int, *, reduction: int = 16, kernel_size: int = 7, dims: int = 2) -> None:
        super().__init__()
        conv = conv_nd(dims)
        hidden = hidden_channels(channels, reduction)
        self.fc1 = conv(channels, hidden, 1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = conv(hidden, channels, 1)
        self.spatial = conv(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.spatial_bn = batchnorm_nd(dims)(1)

    def _mlp(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu(self.fc1(pooled)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        axes = tuple(range(2, x.dim()))
        gate = torch.sigmoid(self._mlp(x.mean(dim=axes, keepdim=True)) + self._mlp(x.amax(dim=axes, keepdim=True)))
        x = gate * x
        pooled = torch.cat((x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)), dim=1)
        return torch.sigmoid(self.spatial_bn(self.spatial(pooled))) * x
