"""Mixed pooling (eq. 3 and 4): alpha * average + (1 - alpha) * max."""

import torch
import torch.nn.functional as F


def mixed_global_pool(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """Pool every non-channel axis: (N, C, *S) -> (N, C, 1, ...), one per spatial(-temporal) axis.

    Written with adaptive pools so the exported graph uses GlobalAveragePool / GlobalMaxPool.
    """
    if x.dim() == 4:
        avg, mx = F.adaptive_avg_pool2d(x, 1), F.adaptive_max_pool2d(x, 1)
    elif x.dim() == 5:
        avg, mx = F.adaptive_avg_pool3d(x, 1), F.adaptive_max_pool3d(x, 1)
    else:
        raise ValueError(f"expected a 4-D or 5-D feature map, got shape {tuple(x.shape)}")
    return alpha * avg + (1.0 - alpha) * mx


def mixed_channel_pool(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """Pool the channel axis: (N, C, *S) -> (N, 1, *S).

    `max(dim=1).values` rather than `amax`: the same values, and its backward scatters into the argmax
    (one pass) where `amax`'s compares, counts and divides over the whole map (about 3x slower in training).
    On ties the gradient goes to one channel instead of being split; both are subgradients of the max.
    """
    return alpha * x.mean(dim=1, keepdim=True) + (1.0 - alpha) * x.max(dim=1, keepdim=True).values
