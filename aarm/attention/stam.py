"""STAM, the spatial-temporal attention module (eq. 4), with its training-only highlight/dropout layer."""

import torch
from torch import nn

from aarm.attention.pooling import mixed_channel_pool
from aarm.errors import ConfigError


def highlighted_map(attention: torch.Tensor, eta: float) -> torch.Tensor:
    """H = 1[A >= eta * max(A)], the max taken per sample over all positions.

    Thresholding the sigmoid map A (in (0, 1)) rather than the raw logits F' keeps the threshold
    meaningful when F' <= 0 everywhere. Input and output (N, 1, *S); the output is 0/1 in A's dtype.
    """
    peak = attention.flatten(1).amax(dim=1).view(-1, *([1] * (attention.dim() - 1)))
    return (attention >= eta * peak).to(attention.dtype)


class STAM(nn.Module):
    """F_st(M): channel-wise mixed pooling to one map, a small conv stack, then sigmoid.

    2D: three 3x3 convs 1 -> 1 (padding 1, no activation between, as eq. 4 writes it).
    3D: a (2+1)D pair, 1x7x7 then 7x1x1.
    Training only, with chi > 0: each sample independently takes the highlighted map H with
    probability chi, else the sigmoid map A. Eval always returns A: the random pick and the threshold
    sit behind `self.training`, so nothing of them is traced into an exported graph.

    `channels` is accepted for the attention-factory signature; STAM's parameters do not depend on it.
    Input (N, C, *S); output (N, 1, *S).
    """

    def __init__(
        self, channels: int, *, alpha: float = 0.5, eta: float = 0.9, chi: float = 0.25, dims: int = 2
    ) -> None:
        super().__init__()
        if not 0.0 <= chi <= 1.0:
            raise ConfigError(f"STAM pick rate chi must be in [0, 1], got {chi}")
        if not 0.0 < eta <= 1.0:
            raise ConfigError(f"STAM threshold eta must be in (0, 1], got {eta}")
        self.alpha, self.eta, self.chi = alpha, eta, chi
        if dims == 2:
            self.conv = nn.Sequential(*(nn.Conv2d(1, 1, 3, padding=1) for _ in range(3)))
        elif dims == 3:
            self.conv = nn.Sequential(
                nn.Conv3d(1, 1, (1, 7, 7), padding=(0, 3, 3)),
                nn.Conv3d(1, 1, (7, 1, 1), padding=(3, 0, 0)),
            )
        else:
            raise ConfigError(f"attention dims must be 2 or 3, got {dims}")

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The deterministic sigmoid map A = sigmoid(F'(M)), (N, 1, *S)."""
        return torch.sigmoid(self.conv(mixed_channel_pool(x, self.alpha)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(mixed_channel_pool(x, self.alpha))

    def gate(self, pooled: torch.Tensor) -> torch.Tensor:
        """F_st from the channel-wise mixed pool (N, 1, *S): A, or in training H with probability chi."""
        attention = torch.sigmoid(self.conv(pooled))
        if self.training and self.chi > 0.0:
            pick = torch.rand(attention.shape[0], device=attention.device) < self.chi
            pick = pick.view(-1, *([1] * (attention.dim() - 1)))
            attention = torch.where(pick, highlighted_map(attention, self.eta), attention)
        return attention
