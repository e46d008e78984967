"""Mixed pooling (eq. 3 and 4): alpha * average + (1 - alpha) * max."""

import torch
import torch.nn.functional as F


def differentiable(*tensors: torch.Tensor) -> bool:
    """True in training (a gradient will flow back through one of `tensors`) and while an ONNX exporter traces:
    where the attention takes the forms with fast backward passes and the exporters' usual graphs. False in
    inference, where the max can be `amax`: its forward is about 6x faster on the CPU than `adaptive_max_pool`
    or `max(dim)` (one vectorised reduction instead of an argmax search), but its backward is the slow one (it
    compares, counts ties and divides over the whole map). The TorchScript exporter writes GlobalMaxPool for
    the adaptive pool."""
    grads = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    return grads or torch.onnx.is_in_onnx_export()


def mixed_global_pool(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """Pool every non-channel axis: (N, C, *S) -> (N, C, 1, ...), one per spatial(-temporal) axis.
    Traced for ONNX and in training: adaptive pools, so the exported graph uses GlobalAveragePool /
    GlobalMaxPool and the max's backward scatters into its argmax. Inference: mean and amax, the same values.
    """
    if x.dim() not in (4, 5):
        raise ValueError(f"expected a 4-D or 5-D feature map, got shape {tuple(x.shape)}")
    if not differentiable(x):
        axes = tuple(range(2, x.dim()))
        return alpha * x.mean(dim=axes, keepdim=True) + (1.0 - alpha) * x.amax(dim=axes, keepdim=True)
    if x.dim() == 4:
        avg, mx = F.adaptive_avg_pool2d(x, 1), F.adaptive_max_pool2d(x, 1)
    else:
        avg, mx = F.adaptive_avg_pool3d(x, 1), F.adaptive_max_pool3d(x, 1)
    return alpha * avg + (1.0 - alpha) * mx


def mixed_channel_pool(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """Pool the channel axis: (N, C, *S) -> (N, 1, *S).
    Training: `max(dim=1).values` rather than `amax`: the same values, and its backward scatters into the
    argmax (one pass) where `amax`'s compares, counts and divides over the whole map (about 3x slower in
    training). On ties the gradient goes to one channel instead of being split; both are subgradients of the
    max. Inference: `amax`, about 6x faster forward (see `differentiable`).
    """
    mx = x.amax(dim=1, keepdim=True) if not differentiable(x) else x.max(dim=1, keepdim=True).values
    return alpha * x.mean(dim=1, keepdim=True) + (1.0 - alpha) * mx


def hand_written_backward(x: torch.Tensor) -> bool:
    """True where AARM's parallel block takes `mixed_pools` and the fused gate (autograd Functions with
    one-node backwards): a gradient will flow back into x and nothing traces (ONNX export and TorchScript
    tracing keep the standard-op forms)."""
    tracing = torch.onnx.is_in_onnx_export() or torch.jit.is_tracing()
    return torch.is_grad_enabled() and x.requires_grad and not tracing


class _MixedPools(torch.autograd.Function):
    """Both pools of one map in one autograd node: its backward writes dL/dx in one pass (the two means'
    broadcast sum) and scatters the two maxes' gradients into their argmaxes, where autograd's per-op
    backwards write four full-size gradients (two expand-divides, two zero-fills and scatters) and add them."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha_global: float, alpha_channel: float) -> tuple[torch.Tensor, torch.Tensor]:
        # The training forms' values and argmaxes (the first maximum, as the adaptive max pool's); the global
        # max as max(dim) over the flattened positions, about 1.3-2x faster on the CPU than the adaptive pool.
        n, c = x.shape[:2]
        avg = F.adaptive_avg_pool2d(x, 1) if x.dim() == 4 else F.adaptive_avg_pool3d(x, 1)
        global_max = x.reshape(n, c, -1).max(dim=2)
        mx = global_max.values.view(avg.shape)
        pooled = alpha_global * avg + (1.0 - alpha_global) * mx
        global_idx = global_max.indices
        channel_max = x.max(dim=1, keepdim=True)
        per_position = alpha_channel * x.mean(dim=1, keepdim=True) + (1.0 - alpha_channel) * channel_max.values
        ctx.save_for_backward(global_idx, channel_max.indices)
        ctx.alphas = (alpha_global, alpha_channel)
        return pooled, per_position

    @staticmethod
    def backward(ctx, grad_pooled: torch.Tensor, grad_position: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        global_idx, channel_idx = ctx.saved_tensors
        alpha_global, alpha_channel = ctx.alphas
        n, c = global_idx.shape
        positions = channel_idx[0, 0].numel()
        # (N, C, *S), contiguous so that the global argmaxes index its flattened positions
        grad = ((alpha_global * grad_pooled) / positions + (alpha_channel * grad_position) / c).contiguous()
        to_max = ((1.0 - alpha_global) * grad_pooled).reshape(n, c, 1)
        grad.view(n, c, positions).scatter_add_(2, global_idx.view(n, c, 1), to_max)
        grad.scatter_add_(1, channel_idx, (1.0 - alpha_channel) * grad_position)
        return grad, None, None


def mixed_pools(x: torch.Tensor, alpha_global: float, alpha_channel: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(mixed_global_pool(x, alpha_global), mixed_channel_pool(x, alpha_channel)): (N, C, 1, ...), (N, 1, *S).

    The same values, and the same gradients to float rounding (the maxes' gradients go to the same argmaxes).
    Where `hand_written_backward(x)`, one autograd node computes both, so the backward writes x's gradient in
    one pass instead of four; otherwise the two functions.
    """
    if x.dim() not in (4, 5):
        raise ValueError(f"expected a 4-D or 5-D feature map, got shape {tuple(x.shape)}")
    if not hand_written_backward(x):
        return mixed_global_pool(x, alpha_global), mixed_channel_pool(x, alpha_channel)
    return _MixedPools.apply(x, alpha_global, alpha_channel)
