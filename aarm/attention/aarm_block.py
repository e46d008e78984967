"""The convolutional part of AARM: CAM and STAM, fused in parallel (eq. 1, 5) or in sequence."""

import torch
from torch import nn

from aarm.attention.cam import CAM
from aarm.attention.layers import conv_nd
from aarm.attention.pooling import hand_written_backward, mixed_pools
from aarm.attention.stam import STAM
from aarm.errors import ConfigError

FUSIONS = ("parallel", "sequential")


class _GatedFusion(torch.autograd.Function):
    """y = x * (u + w2 * v) + b, the forward of `ParallelFusion.gated` op for op, with a backward of two
    elementwise passes (dL/dx = g * t, g * x) and two batched matmuls reading g * x once each, for dL/du and
    dL/dw2 together and for dL/dv; autograd's addcmul backwards take four elementwise passes and the
    broadcast reductions. x, t (N, C, *S); u (N, C, 1, ...); v (N, 1, *S); w2, b (1, C, 1, ...)."""

    @staticmethod
    def forward(
        ctx, x: torch.Tensor, u: torch.Tensor, w2: torch.Tensor, v: torch.Tensor, b: torch.Tensor
    ) -> torch.Tensor:
        t = torch.addcmul(u, w2, v)
        ctx.save_for_backward(x, t, w2, v)
        return torch.addcmul(b, x, t)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, t, w2, v = ctx.saved_tensors
        n, c = x.shape[:2]
        need_x, need_u, need_w2, need_v, need_b = ctx.needs_input_grad
        grad_x = grad * t if need_x else None
        grad_u = grad_w2 = grad_v = grad_b = None
        if need_u or need_w2 or need_v:
            gx = (grad * x).reshape(n, c, -1)  # (N, C, S)
            if need_u or need_w2:
                v_flat = v.reshape(n, -1)
                both = torch.bmm(gx, torch.stack((torch.ones_like(v_flat), v_flat), dim=2))  # (N, C, 2)
                grad_u = both[..., 0].reshape(n, c, *([1] * (x.dim() - 2)))
                grad_w2 = both[..., 1].sum(0).reshape(w2.shape)
            if need_v:
                grad_v = torch.bmm(w2.reshape(1, 1, c).expand(n, 1, c), gx).reshape(v.shape)
        if need_b:
            grad_b = grad.sum(dim=[0, *range(2, grad.dim())]).reshape(1, c, *([1] * (x.dim() - 2)))
        return grad_x, grad_u, grad_w2, grad_v, grad_b


class ParallelFusion(nn.Module):
    """Y = conv1x1([M_ch, M_st]) (eq. 5), channel-wise: groups = C, two weights and a bias per channel.

    Table 6 fixes the size (AARM adds ~0.03M parameters over SE to ResNet-50), which a dense 2C -> C conv
    (~40M) would not. The parameters keep the grouped conv's layout (`conv.weight` (C, 2, 1, ...),
    `conv.bias` (C,)), group c weighing (M_ch[c], M_st[c]), so checkpoints and the torchvision-layout loading
    are unchanged; the forward computes the same thing as per-channel weighted sums,
    Y = w1 * M_ch + w2 * M_st + b, instead of an interleaving stack and a grouped conv (which PyTorch runs
    group by group). Weights start at 1 and the bias at 0, so with both gates near 0.5 at initialisation
    Y starts close to M and fine-tuning from ImageNet weights starts near the backbone.
    Inputs (N, C, *S) each; output (N, C, *S).
    """

    def __init__(self, channels: int, *, dims: int = 2) -> None:
        super().__init__()
        self.conv = conv_nd(dims)(2 * channels, channels, 1, groups=channels)
        nn.init.ones_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def coefficients(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(w1, w2, b), each (1, C, 1, ...) to broadcast over (N, C, *S)."""
        weight = self.conv.weight
        shape = (1, weight.shape[0]) + (1,) * (weight.dim() - 2)
        return weight[:, 0].reshape(shape), weight[:, 1].reshape(shape), self.conv.bias.reshape(shape)

    def forward(self, m_ch: torch.Tensor, m_st: torch.Tensor) -> torch.Tensor:
        w1, w2, b = self.coefficients()
        return torch.addcmul(torch.addcmul(b, w1, m_ch), w2, m_st)

    def gated(self, x: torch.Tensor, g_ch: torch.Tensor, g_st: torch.Tensor) -> torch.Tensor:
        """forward(g_ch * x, g_st * x) as x * (w1 * g_ch + w2 * g_st) + b: two passes over (N, C, *S).

        x (N, C, *S); g_ch, the channel gate, (N, C, 1, ...); g_st, the spatial gate, (N, 1, *S).
        Where `hand_written_backward(x)` (training), one autograd node with a backward of fewer passes.
        """
        w1, w2, b = self.coefficients()
        if hand_written_backward(x):
            return _GatedFusion.apply(x, w1 * g_ch, w2, g_st, b)
        return torch.addcmul(b, x, torch.addcmul(w1 * g_ch, w2, g_st))


class AARMBlock(nn.Module):
    """Recalibrates a feature map with CAM and STAM.

    parallel (the paper's method, eq. 1): Y = Fuse(F_ch(M) * M, F_st(M) * M).
    sequential (CBAM order, Table 1's ablation): M_ch = F_ch(M) * M; Y = F_st(M_ch) * M_ch.
    Input and output (N, C, H, W) or (N, C, T, H, W).
    """

    def __init__(
        self,
        channels: int,
        *,
        dims: int = 2,
        reduction: int = 16,
        alpha: float = 0.5,
        eta: float = 0.9,
        chi: float = 0.25,
        fusion: str = "parallel",
    ) -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ConfigError(f"unknown fusion {fusion!r}; choose one of {', '.join(FUSIONS)}")
        self.fusion = fusion
        self.cam = CAM(channels, reduction=reduction, alpha=alpha, dims=dims)
        self.stam = STAM(channels, alpha=alpha, eta=eta, chi=chi, dims=dims)
        self.fuse = ParallelFusion(channels, dims=dims) if fusion == "parallel" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fuse is None:
            m_ch = self.cam(x) * x
            return self.stam(m_ch) * m_ch
        if hand_written_backward(x):  # training: both pools in one autograd node (see mixed_pools)
            pooled, per_position = mixed_pools(x, self.cam.alpha, self.stam.alpha)
            return self.fuse.gated(x, self.cam.gate(pooled), self.stam.gate(per_position))
        return self.fuse.gated(x, self.cam(x), self.stam(x))
