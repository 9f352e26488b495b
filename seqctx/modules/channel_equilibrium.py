"""Channel Equilibrium (Shao et al., "Channel Equilibrium Networks for Learning Deep
Representation", ICML 2020)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .contract import check_input, check_spatial_dims

__all__ = ["ChannelEquilibrium", "inverse_sqrt_newton"]


def inverse_sqrt_newton(sigma: Tensor, iterations: int = 3) -> Tensor:
    """``Sigma^-1/2`` of a batch of SPD matrices ``(G, g, g)`` by Newton's iteration (eq. 6).

    ``Sigma_N = Sigma / tr(Sigma)`` (so that ``||Sigma_N||_2 < 1`` and the iteration converges),
    ``S_0 = I``, ``S_k = 1/2 (3 S_{k-1} - S_{k-1}^3 Sigma_N)``, and
    ``Sigma^-1/2 ~= S_T / sqrt(tr(Sigma))``.
    """
    eye = torch.eye(sigma.shape[-1], dtype=sigma.dtype, device=sigma.device).expand_as(sigma)
    trace = sigma.diagonal(dim1=-2, dim2=-1).sum(-1)[:, None, None]  # (G, 1, 1)
    sigma_n = sigma / trace
    s = eye
    for _ in range(iterations):
        s = 1.5 * s - 0.5 * torch.linalg.matrix_power(s, 3) @ sigma_n
    return s / trace.sqrt()


class ChannelEquilibrium(nn.Module):
    """Channel Equilibrium block on ``(N, C, *S)``, placed after a normaliser, before the ReLU.

    Output (eqs. 3-4 with the reparameterisation of eqs. 8-9)::

        p = lambda * Sigma^-1/2 x + (1 - lambda) * F(sigma2_n) * s^-1/2 * x

    * batch decorrelation (BD, sec. 3.2.1): per group of ``group_size`` channels, ``Sigma`` is the
      covariance of the batch (after an optional ``pool x pool`` max-pool of the spatial map,
      appendix F) plus ``eps I``; ``Sigma^-1/2`` by :func:`inverse_sqrt_newton`;
    * adaptive instance inverse (AII, sec. 3.2.2): ``sigma2_n`` is the per-channel variance of
      each sample, ``F = sigmoid(W2 relu(LN(W1 sigma2_n)))`` with ``W1: C -> C/r``, and
      ``s`` the variance of all elements of the batch;
    * ``lambda = sigmoid(theta)`` with a learnable scalar ``theta`` (0 at init).

    In training, running estimates of ``Sigma^-1/2`` and ``s^-1/2`` are updated with
    ``momentum`` (appendix F, eq. 23); in eval mode they replace the batch statistics, so a
    sample's output never depends on the rest of its batch. Everything runs with autocast disabled,
    in fp32 for fp16/bf16 inputs (the input's dtype otherwise): autocast would run the covariance,
    the Newton iterations and the whitening in half precision, where the covariance of ~1e5
    elements per channel overflows fp16; the centred batch is also scaled by ``1/sqrt(M)`` before
    the product.

    Args:
        channels: ``C``.
        spatial_dims: ``len(S)`` (see :mod:`~seqctx.modules.contract`); pooling is spatial only.
        group_size: channels per decorrelation group; must divide ``C`` (``C`` itself if smaller).
        reduction: ``r`` of the AII bottleneck.
        iterations: Newton iterations ``T``.
        momentum: ``m`` of the running estimates.
        eps: added to ``Sigma``'s diagonal and to variances.
        pool: max-pool window for the covariance (1 = none); applied to the last two spatial dims
            (the only one for sequences), never to time.
    """

    def __init__(
        self,
        channels: int,
        spatial_dims: int = 2,
        *,
        group_size: int = 16,
        reduction: int = 4,
        iterations: int = 3,
        momentum: float = 0.1,
        eps: float = 1e-5,
        pool: int = 2,
    ) -> None:
        super().__init__()
        group_size = min(group_size, channels)
        if group_size < 1 or channels % group_size:
            raise ValueError(f"ChannelEquilibrium group_size={group_size} must divide channels={channels}")
        check_spatial_dims("ChannelEquilibrium", spatial_dims)
        if iterations < 1 or pool < 1 or not 0.0 <= momentum <= 1.0:
            raise ValueError(
                f"ChannelEquilibrium needs iterations >= 1, pool >= 1 and momentum in [0, 1], "
                f"got {iterations}, {pool}, {momentum}"
            )
        self.channels, self.spatial_dims = channels, spatial_dims
        self.group_size = group_size
        self.iterations = iterations
        self.momentum = momentum
        self.eps = eps
        self.pool = pool
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden, bias=False)  # W1
        self.norm = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, channels, bias=False)  # W2
        self.lambda_logit = nn.Parameter(torch.zeros(1))
        groups = channels // group_size
        eye = torch.eye(group_size).expand(groups, group_size, group_size).clone()
        self.register_buffer("running_whitening", eye)  # running Sigma^-1/2, (G, g, g)
        self.register_buffer("running_inv_std", torch.ones(()))  # running s^-1/2

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, spatial_dims={self.spatial_dims}, group_size={self.group_size}, "
            f"iterations={self.iterations}, momentum={self.momentum}, pool={self.pool}"
        )

    def _batch_statistics(self, xf: Tensor) -> tuple[Tensor, Tensor]:
        """``Sigma^-1/2`` ``(G, g, g)`` and ``s^-1/2`` (scalar) of a batch (fp32 or fp64)."""
        z, k = xf, self.pool
        if k > 1:  # (N, C, *S) -> (N, C, *ceil(S / k)), time left alone
            if xf.dim() == 3:
                z = F.max_pool1d(xf, k, ceil_mode=True)
            elif xf.dim() == 4:
                z = F.max_pool2d(xf, k, ceil_mode=True)
            else:
                z = F.max_pool3d(xf, (1, k, k), ceil_mode=True)
        groups, g = self.channels // self.group_size, self.group_size
        z = z.transpose(0, 1).reshape(groups, g, -1)  # (G, g, M)
        zc = (z - z.mean(-1, keepdim=True)) / math.sqrt(z.shape[-1])  # scaled first: no overflow in the sum
        eye = torch.eye(g, dtype=z.dtype, device=z.device)
        sigma = zc @ zc.transpose(1, 2) + self.eps * eye  # (G, g, g)
        whitening = inverse_sqrt_newton(sigma, self.iterations)
        inv_std = (xf.var(unbiased=False) + self.eps).rsqrt()
        return whitening, inv_std

    def forward(self, x: Tensor) -> Tensor:
        check_input("ChannelEquilibrium", x, self.channels, self.spatial_dims)
        with torch.autocast(x.device.type, enabled=False):
            return self._equilibrium(x.float() if x.dtype in (torch.float16, torch.bfloat16) else x).to(x.dtype)

    def _equilibrium(self, xf: Tensor) -> Tensor:
        """Eqs. 8-9 on ``xf (N, C, *S)``, fp32 or fp64, autocast off."""
        dtype = xf.dtype
        if self.training:
            whitening, inv_std = self._batch_statistics(xf)
            with torch.no_grad():
                m = self.momentum
                self.running_whitening.lerp_(whitening.detach().to(self.running_whitening.dtype), m)
                self.running_inv_std.lerp_(inv_std.detach().to(self.running_inv_std.dtype), m)
        else:
            whitening, inv_std = self.running_whitening.to(dtype), self.running_inv_std.to(dtype)
        n, c = xf.shape[:2]
        groups, g = c // self.group_size, self.group_size
        xg = xf.reshape(n, groups, g, -1)  # (N, G, g, L)
        decorrelated = (whitening @ xg).view_as(xf)  # BD branch
        inst_var = xf.flatten(2).var(-1, unbiased=False)  # (N, C)
        h = F.linear(inst_var, self.fc1.weight.to(dtype))  # (N, C/r)
        norm = self.norm
        h = F.layer_norm(h, norm.normalized_shape, norm.weight.to(dtype), norm.bias.to(dtype), norm.eps)
        gate = torch.sigmoid(F.linear(F.relu(h), self.fc2.weight.to(dtype)))  # (N, C)
        inverse = xf * (gate * inv_std).view(n, c, *([1] * (xf.dim() - 2)))  # AII branch
        lam = torch.sigmoid(self.lambda_logit.to(dtype))
        return lam * decorrelated + (1 - lam) * inverse
