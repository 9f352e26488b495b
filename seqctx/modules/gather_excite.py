"""Gather-Excite (Hu et al., "Gather-Excite: Exploiting Feature Context in Convolutional Neural
Networks", NeurIPS 2018)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedParameter

from .contract import check_input, check_spatial_dims
from .tables import CONV_BY_DIMS

__all__ = ["GatherExcite", "GlobalDepthwiseConv"]

_CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_NORM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


class GlobalDepthwiseConv(LazyModuleMixin, nn.Module):
    """A depthwise convolution whose kernel covers the whole input map, ``(N, C, *S) -> (N, C, 1, ...)``
    (GE-theta's global gather): ``y[n, c] = sum_s W[c, 0, s] x[n, c, s]``, no bias.

    ``size = S`` fixes the kernel now; ``size=None`` sizes it from the first input, like PyTorch's
    ``Lazy*`` modules (run one forward, or load a state dict, before building the optimiser), so
    the operator can be put into any network by surgery. The weight has ``nn.ConvNd``'s layout
    ``(C, 1, *S)`` and initialisation.
    """

    def __init__(self, channels: int, spatial_dims: int, size: Sequence[int] | None = None) -> None:
        super().__init__()
        self.channels, self.spatial_dims = channels, spatial_dims
        if size is None:
            self.weight: nn.Parameter = UninitializedParameter()
        else:
            if len(size) != spatial_dims or min(size) < 1:
                raise ValueError(f"GlobalDepthwiseConv size must be {spatial_dims} positive ints, got {tuple(size)}")
            self.weight = nn.Parameter(torch.empty(channels, 1, *size))
            self.reset_parameters()

    def reset_parameters(self) -> None:
        if not self.has_uninitialized_params():
            nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.ConvNd's initialisation

    def initialize_parameters(self, x: Tensor) -> None:  # called by LazyModuleMixin before the first forward
        if self.has_uninitialized_params():
            with torch.no_grad():
                self.weight.materialize((self.channels, 1, *x.shape[2:]), device=x.device, dtype=x.dtype)
                self.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        size = tuple(self.weight.shape[2:])
        if tuple(x.shape[2:]) != size:
            raise ValueError(
                f"GE-theta's global gather was built for {size} maps (feat_size), got {tuple(x.shape[2:])}; "
                "the global depthwise kernel fits one input size"
            )
        return _CONV_FN[self.spatial_dims](x, self.weight, groups=self.channels)  # (N, C, 1, ...)

    def extra_repr(self) -> str:
        size = "lazy" if self.has_uninitialized_params() else tuple(self.weight.shape[2:])
        return f"{self.channels}, size={size}"


class GatherExcite(nn.Module):
    """Gather-Excite on ``(N, C, *S)``: ``y = x * sigmoid(excite(gather(x)))`` (sec. 3).

    Gather ``xi_G`` with extent ratio ``e`` (``extent``; 0 means global):

    * GE-theta-minus (default): parameter-free average pooling, global (``e = 0``) or with
      kernel ``2e - 1`` and stride ``e`` (padding ``e - 1``, padded cells not counted), so
      the gathered map has ``ceil(S / e)`` cells;
    * GE-theta (``param_gather=True``): depthwise convolutions with BN, ``log2(e)`` chained
      3x3 stride-2 ones (ReLU between them), or for ``e = 0`` one depthwise convolution over the
      whole map (:class:`GlobalDepthwiseConv`), sized by ``feat_size`` or by the first input.
      The paper's sec. 4.2 says "e/2 such convolutions are performed in total"; that equals
      ``log2(e)`` for ``e = 2, 4`` and differs only at ``e = 8`` (4 vs 3). We keep ``log2(e)``:
      each stride-2 convolution halves the map, so ``log2(e)`` of them give the gathered map its
      extent ratio ``e`` (``ceil(S / e)`` cells, as the parameter-free gather), while a fourth
      stride-2 convolution at ``e = 8`` would give extent 16.

    Excite ``xi_E``: the gathered map is resized back to ``S`` by nearest-neighbour interpolation
    and passed through a sigmoid; GE-theta-plus (``mlp=True``) first applies an SE-style
    bottleneck ``1x1 conv C -> C/r, ReLU, 1x1 conv C/r -> C``.

    Args:
        channels: ``C``.
        spatial_dims: ``len(S)``: 1, 2 or 3.
        extent: ``e``; 0 for a global extent, else a power of two for ``param_gather``.
        param_gather: use the parameterised (depthwise convolution) gather of GE-theta.
        mlp: add the bottleneck of GE-theta-plus to the excite.
        reduction: ``r`` of the bottleneck.
        feat_size: the input's spatial size for the global parameterised gather; None sizes it at
            the first forward.
    """

    def __init__(
        self,
        channels: int,
        spatial_dims: int = 2,
        *,
        extent: int = 0,
        param_gather: bool = False,
        mlp: bool = False,
        reduction: int = 16,
        feat_size: int | Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        check_spatial_dims("GatherExcite", spatial_dims)
        if extent < 0:
            raise ValueError(f"GatherExcite extent must be >= 0 (0 = global), got {extent}")
        self.channels, self.spatial_dims = channels, spatial_dims
        self.extent = extent
        conv, norm = CONV_BY_DIMS[spatial_dims], _NORM[spatial_dims]
        self.gather: nn.Sequential | None = None
        if param_gather:
            layers: list[nn.Module] = []
            if extent == 0:
                size = (feat_size,) * spatial_dims if isinstance(feat_size, int) else feat_size
                if size is not None and len(size) != spatial_dims:
                    raise ValueError(f"GatherExcite feat_size must have {spatial_dims} entries, got {feat_size}")
                layers += [GlobalDepthwiseConv(channels, spatial_dims, size), norm(channels)]
            else:
                steps = int(math.log2(extent)) if extent > 1 else 0
                if 2**steps != extent or steps == 0:
                    raise ValueError(
                        f"GatherExcite with param_gather=True needs extent 0 or a power of two >= 2, got {extent}"
                    )
                for i in range(steps):
                    layers += [
                        conv(channels, channels, 3, stride=2, padding=1, groups=channels, bias=False),
                        norm(channels),
                    ]
                    if i < steps - 1:
                        layers.append(nn.ReLU(inplace=True))
            self.gather = nn.Sequential(*layers)
        self.mlp: nn.Sequential | None = None
        if mlp:
            hidden = max(1, channels // reduction)
            self.mlp = nn.Sequential(conv(channels, hidden, 1), nn.ReLU(inplace=True), conv(hidden, channels, 1))

    def extra_repr(self) -> str:
        return f"spatial_dims={self.spatial_dims}, extent={self.extent}"

    def _gather(self, x: Tensor) -> Tensor:
        if self.gather is not None:
            return self.gather(x)
        if self.extent == 0:
            return x.mean(tuple(range(2, x.dim())), keepdim=True)  # (N, C, 1, ...)
        # Average over the (2e-1)-window around each stride-e cell, padded cells not counted.
        # Written as a ratio of two zero-padded poolings so that maps smaller than the window work
        # in every rank (avg_pool3d rejects inputs smaller than its kernel even with padding).
        e, k = self.extent, 2 * self.extent - 1
        pad = [e - 1] * (2 * self.spatial_dims)
        pool = _AVG_POOL[self.spatial_dims]
        total = pool(F.pad(x, pad), k, stride=e)  # (N, C, ceil(S / e))
        ones = x.new_ones((1, 1, *x.shape[2:]))
        return total / pool(F.pad(ones, pad), k, stride=e)

    def forward(self, x: Tensor) -> Tensor:
        check_input("GatherExcite", x, self.channels, self.spatial_dims)
        g = self._gather(x)
        if self.mlp is not None:
            g = self.mlp(g)
        if g.shape[2:] != x.shape[2:] and g[0, 0].numel() > 1:
            g = F.interpolate(g, size=x.shape[2:], mode="nearest")
        return x * g.sigmoid()
