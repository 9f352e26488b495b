"""Squeeze-and-Excitation (Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018): the channel
attention baseline that GCT, CGC, GE and CE all compare with."""

from __future__ import annotations

from torch import Tensor, nn

from .contract import check_input, check_spatial_dims

__all__ = ["SqueezeExcite"]


class SqueezeExcite(nn.Module):
    """SE block on ``(N, C, *S)``: ``y = x * sigmoid(W2 relu(W1 mean_S(x) + b1) + b2)``.

    ``W1: C -> C/r`` and ``W2: C/r -> C`` with biases, as in the SE paper (eqs. 2-3), so a
    ResNet-50 with SE on every residual branch has 28.09M parameters.

    Args:
        channels: ``C``.
        spatial_dims: ``len(S)`` (see :mod:`~seqctx.modules.contract`).
        reduction: ``r``; the hidden width is ``max(1, C // r)``.
    """

    def __init__(self, channels: int, spatial_dims: int = 2, *, reduction: int = 16) -> None:
        super().__init__()
        if reduction < 1:
            raise ValueError(f"SqueezeExcite reduction must be >= 1, got {reduction}")
        check_spatial_dims("SqueezeExcite", spatial_dims)
        self.channels, self.spatial_dims = channels, spatial_dims
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: Tensor) -> Tensor:
        check_input("SqueezeExcite", x, self.channels, self.spatial_dims)
        dims = tuple(range(2, x.dim()))
        z = x.mean(dims)  # (N, C)
        g = self.fc2(self.fc1(z).relu()).sigmoid()  # (N, C)
        return x * g.view(*g.shape, *([1] * len(dims)))
