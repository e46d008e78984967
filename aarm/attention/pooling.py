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
    """Pool the channel axis: (N, C, *S) -> (N, 1, *S)."""
    return alpha * x.mean(dim=1, keepdim=True) + (1.0 - alpha) * x.amax(dim=1, keepdim=True)
