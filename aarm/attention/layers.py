"""Dimension-generic layer builders: one attention class serves 2D and 3D networks."""

from torch import nn

from aarm.errors import ConfigError


def conv_nd(dims: int) -> type[nn.Conv2d] | type[nn.Conv3d]:
    if dims == 2:
        return nn.Conv2d
    if dims == 3:
        return nn.Conv3d
    raise ConfigError(f"attention dims must be 2 or 3, got {dims}")


def batchnorm_nd(dims: int) -> type[nn.BatchNorm2d] | type[nn.BatchNorm3d]:
    return nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d


def hidden_channels(channels: int, reduction: int) -> int:
    """Width of the C -> C/r -> C bottleneck, at least 1."""
    if reduction < 1:
        raise ConfigError(f"reduction ratio r must be >= 1, got {reduction}")
    return max(channels // reduction, 1)
