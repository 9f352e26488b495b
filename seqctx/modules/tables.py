"""The layer tables the operators, the surgery and the trainer share: convolutions by number of
spatial dims, and the normaliser types."""

from __future__ import annotations

from torch import nn

__all__ = ["CHANNEL_NORMS", "CONV_BY_DIMS", "NORMS"]

CONV_BY_DIMS: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
# normalisers with per-channel statistics and a channel count (BatchNorm, InstanceNorm, GroupNorm)
CHANNEL_NORMS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.GroupNorm)
NORMS = (*CHANNEL_NORMS, nn.LayerNorm)  # every normaliser (their affine parameters go without weight decay)
