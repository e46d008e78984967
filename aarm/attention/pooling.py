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
