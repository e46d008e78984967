"""CAM, the channel attention module (eq. 3)."""

import torch
from torch import nn

from aarm.attention.layers import conv_nd, hidden_channels
from aarm.attention.pooling import mixed_global_pool


class CAM(nn.Module):
    """F_ch(M) = sigmoid(W2 relu(W1 (alpha avgpool(M) + (1 - alpha) maxpool(M)))).

    The pools run over every non-channel axis; W1, W2 are one shared MLP C -> C/r -> C written as
    1x1 convolutions (with biases, as SE). Returns the map, not the product.

    Input (N, C, H, W) or (N, C, T, H, W); output (N, C, 1, 1) or (N, C, 1, 1, 1).
    """

    def __init__(self, channels: int, *, reduction: int = 16, alpha: float = 0.5, dims: int = 2) -> None:
        super().__init__()
        conv = conv_nd(dims)
        hidden = hidden_channels(channels, reduction)
        self.alpha = alpha
        self.fc1 = conv(channels, hidden, 1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = conv(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(mixed_global_pool(x, self.alpha))

    def gate(self, pooled: torch.Tensor) -> torch.Tensor:
        """The map from the mixed global pool: (N, C, 1, ...) -> (N, C, 1, ...)."""
        return torch.sigmoid(self.fc2(self.relu(self.fc1(pooled))))
