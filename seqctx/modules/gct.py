"""Gated Channel Transformation (Yang et al., "Gated Channel Transformation for Visual Recognition",
CVPR 2020)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .contract import check_input, check_spatial_dims

__all__ = ["GCT"]


class GCT(nn.Module):
    """Gated Channel Transformation on ``(N, C, *S)`` inputs, ``len(S)`` in ``{1, 2, 3}``.

    Global context embedding (eq. 2; the l1 variant of eq. 2's footnote)::

        s_c = alpha_c * sqrt(sum_S x_c^2 + eps)            # mode="l2"
        s_c = alpha_c * sum_S |x_c|                        # mode="l1" (sum_S x_c after a ReLU)

    channel normalisation (eq. 3)::

        s_hat_c = s_c / sqrt(mean_c s_c^2 + eps)           # mode="l2"
        s_hat_c = s_c / (mean_c |s_c| + eps)               # mode="l1"

    gating adaptation (eq. 4)::

        y_c = x_c * (1 + tanh(gamma_c * s_hat_c + beta_c))

    ``alpha = 1`` and ``gamma = beta = 0`` at init, so the module starts as an exact identity
    (eq. 5). The statistics are computed in fp32 for fp16/bf16 inputs, in the input's dtype
    otherwise (fp64 stays fp64). ``beta`` should not get
    weight decay (the paper's appendix); :meth:`no_weight_decay` names it.

    Args:
        channels: ``C``.
        spatial_dims: ``len(S)`` (see :mod:`~seqctx.modules.contract`).
        mode: ``"l2"`` (the paper's default) or ``"l1"``.
        eps: the small constant of eqs. 2-3.
        after_relu: the input is known to be non-negative, so the l1 embedding skips ``abs``.
    """

    def __init__(
        self, channels: int, spatial_dims: int = 2, *, mode: str = "l2", eps: float = 1e-5, after_relu: bool = False
    ) -> None:
        super().__init__()
        if mode not in ("l1", "l2"):
            raise ValueError(f"GCT mode must be 'l1' or 'l2', got {mode!r}")
        if channels < 1:
            raise ValueError(f"GCT channels must be >= 1, got {channels}")
        check_spatial_dims("GCT", spatial_dims)
        self.channels, self.spatial_dims = channels, spatial_dims
        self.mode = mode
        self.eps = eps
        self.after_relu = after_relu
        self.alpha = nn.Parameter(torch.ones(channels))
        self.gamma = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def no_weight_decay(self) -> set[str]:
        return {"beta"}

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, spatial_dims={self.spatial_dims}, mode={self.mode!r}, eps={self.eps}, "
            f"after_relu={self.after_relu}"
        )

    def forward(self, x: Tensor) -> Tensor:
        check_input("GCT", x, self.channels, self.spatial_dims)
        dims = tuple(range(2, x.dim()))
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        if self.mode == "l2":
            s = (xf.pow(2).sum(dims) + self.eps).sqrt() * self.alpha  # (N, C)
            s_hat = s / (s.pow(2).mean(1, keepdim=True) + self.eps).sqrt()
        else:
            s = (xf if self.after_relu else xf.abs()).sum(dims) * self.alpha  # (N, C)
            s_hat = s / (s.abs().mean(1, keepdim=True) + self.eps)
        gate = 1.0 + torch.tanh(self.gamma * s_hat + self.beta)  # (N, C)
        return x * gate.to(x.dtype).view(*gate.shape, *([1] * len(dims)))
