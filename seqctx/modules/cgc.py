"""Context-Gated Convolution (Lin et al., "Context-Gated Convolution", ECCV 2020).

A CGC layer is a convolution whose kernel is modulated, per sample, by a gate computed from the
global context of its input (sec. 2.2)::

    C  = relu(BN(E pool(x)))                      context encoding, (N, c, d), E shared by channels
    O  = relu(BN(I relu(BN'(E pool(x)))))         channel interacting, (N, o, d), grouped linear I
    G1 = C D_c,  G2 = O D_o                       gate decoding, (N, c, k) and (N, o, k)
    G[n, h, i, k] = sigmoid(G1[n, i, k] + G2[n, h, k])          (eq. 1)
    y[n] = conv(x[n], W * G[n])                                 (eq. 2)

with ``k`` the kernel's positions and ``d = prod(context_size) // 2 + 1`` latents.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ContextGate", "ContextGatedConv1d", "ContextGatedConv2d", "ContextGatedConv3d"]

_SizeArg = int | Sequence[int]


class ContextGate(nn.Module):
    """The three CGC modules that turn pooled context into a kernel gate (sec. 2.2, eq. 1).

    Args:
        in_channels: ``c``, the convolution's input channels.
        out_channels: ``o``, the convolution's output channels.
        kernel_numel: ``k``, the number of kernel positions (``prod(kernel_size)``).
        context_numel: the number of pooled context positions per channel.
        groups: the convolution's groups; gate entry ``(h, i)`` uses input channel
            ``(h // (o / groups)) * (c / groups) + i``, the channel that weight entry multiplies.
        channels_per_group: input channels per group of the channel-interacting linear layer
            (the paper fixes ``c/g = 16``); its weight is shared by the groups. A plain ``c -> o``
            linear layer is used when ``c`` is smaller or the groups do not divide ``c`` and ``o``.

    Shapes: ``forward(context (N, c, context_numel)) -> gate (N, o, c/groups, k)`` in ``(0, 1)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_numel: int,
        context_numel: int,
        groups: int = 1,
        channels_per_group: int = 16,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.groups = groups
        latent = context_numel // 2 + 1
        ng = in_channels // channels_per_group
        if ng < 1 or in_channels % channels_per_group or out_channels % ng:
            ng = 1
        self.interact_groups = ng
        # Context encoding: E shared by all channels, then two separately normalised branches.
        self.encode = nn.Linear(context_numel, latent, bias=False)
        self.encode_norm = nn.BatchNorm1d(in_channels)  # branch to G1
        self.interact_in_norm = nn.BatchNorm1d(in_channels)  # branch to the channel interacting
        # Channel interacting: grouped linear c -> o, one weight shared by the groups.
        self.interact = nn.Linear(in_channels // ng, out_channels // ng, bias=False)
        self.interact_norm = nn.BatchNorm1d(out_channels)
        # Gate decoding: D_c and D_o, each shared across channels.
        self.decode_in = nn.Linear(latent, kernel_numel, bias=False)
        self.decode_out = nn.Linear(latent, kernel_numel, bias=False)
        for lin in (self.encode, self.interact, self.decode_in, self.decode_out):
            nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")  # He et al. (2015), sec. 3.1

    def forward(self, context: Tensor) -> Tensor:
        n, c, _ = context.shape
        o, g, ng = self.out_channels, self.groups, self.interact_groups
        e = self.encode(context)  # (N, c, d)
        g1 = self.decode_in(F.relu(self.encode_norm(e)))  # (N, c, k)
        z = F.relu(self.interact_in_norm(e))  # (N, c, d)
        d = z.shape[-1]
        z = self.interact(z.view(n, ng, c // ng, d).transpose(2, 3))  # (N, ng, d, o/ng)
        z = z.transpose(2, 3).reshape(n, o, d)  # (N, o, d)
        g2 = self.decode_out(F.relu(self.interact_norm(z)))  # (N, o, k)
        k = g1.shape[-1]
        logits = g1.view(n, g, 1, c // g, k) + g2.view(n, g, o // g, 1, k)  # (N, g, o/g, c/g, k)
        return torch.sigmoid(logits).view(n, o, c // g, k)


class _ContextGatedConvNd:
    """Shared machinery of the CGC layers; mixed in before ``nn.Conv{1,2,3}d``.

    The per-sample convolution folds the batch into the group dimension: the input
    ``(N, C, *S)`` is viewed as ``(1, N*C, *S)`` and convolved once with the stacked gated kernels
    ``(N*O, C/groups, *k)`` and ``groups = N * groups``. It runs the same kernels as the plain
    convolution, with no Python loop and no unfold. Memory: the gated kernels cost
    ``N * O * C/groups * prod(k)`` extra elements (the gate of the same size is kept for backward),
    e.g. 2.4M per sample for a 512->512 3x3 convolution; the pooled context and latents are
    negligible. With ``num_segments`` the ``N*T`` frames of a video share one kernel, so the cost
    is per video, not per frame.
    """

    _spatial_dims: int
    weight: Tensor
    bias: Tensor | None
    kernel_size: tuple[int, ...]
    in_channels: int
    out_channels: int
    groups: int
    stride: tuple[int, ...]
    padding: tuple[int, ...] | str
    dilation: tuple[int, ...]
    padding_mode: str
    _reversed_padding_repeated_twice: list[int]

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: _SizeArg,
        stride: _SizeArg = 1,
        padding: _SizeArg | str = 0,
        dilation: _SizeArg = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        context_size: _SizeArg | None = None,
        num_segments: int | None = None,
        channels_per_group: int = 16,
    ) -> None:
        super().__init__(  # type: ignore[call-arg]
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            padding_mode,
            device=device,
            dtype=dtype,
        )
        name = type(self).__name__
        if num_segments is not None and self._spatial_dims != 2:
            raise ValueError(f"{name}: num_segments applies to ContextGatedConv2d only")
        if num_segments is not None and num_segments < 1:
            raise ValueError(f"{name}: num_segments must be >= 1, got {num_segments}")
        self.num_segments = num_segments
        ctx_dims = 3 if num_segments is not None else self._spatial_dims
        if context_size is None:
            ks = self.kernel_size
            context_size = ((max(ks),) + ks) if num_segments is not None else ks
        elif isinstance(context_size, int):
            context_size = (context_size,) * ctx_dims
        context_size = tuple(int(s) for s in context_size)
        if len(context_size) != ctx_dims or min(context_size) < 1:
            raise ValueError(
                f"{name}: context_size must be {ctx_dims} positive ints "
                f"({'time, height, width' if num_segments else 'one per kernel dim'}), "
                f"got {context_size}"
            )
        self.context_size = context_size
        self.gated = math.prod(self.kernel_size) > 1
        self.context_gate: ContextGate | None = None
        if self.gated:
            self.context_gate = ContextGate(
                in_channels,
                out_channels,
                math.prod(self.kernel_size),
                math.prod(context_size),
                groups,
                channels_per_group,
            ).to(device=device, dtype=dtype)

    @classmethod
    def from_conv(cls, conv: nn.Module, **kwargs: object) -> _ContextGatedConvNd:
        """A CGC layer with ``conv``'s hyper-parameters and a copy of its weight and bias.

        ``kwargs`` go to the constructor (``context_size``, ``num_segments``, ...).
        """
        base = _PLAIN_CONV[cls._spatial_dims]
        if not isinstance(conv, base):
            raise TypeError(f"{cls.__name__}.from_conv expects a {base.__name__}, got {type(conv).__name__}")
        new = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
            conv.bias is not None,
            conv.padding_mode,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
            **kwargs,
        )
        with torch.no_grad():
            new.weight.copy_(conv.weight)
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
        return new

    def _pool_context(self, x: Tensor) -> Tensor:
        """``(N, C, *S)`` (or ``(N*T, C, H, W)`` with ``num_segments``) -> ``(N, C, prod(ctx))``."""
        if self.num_segments is not None:
            x = self._frames_to_clips(x).transpose(1, 2)  # (N, C, T, H, W)
        pool = (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d)[x.dim() - 3]
        return pool(x, self.context_size).flatten(2)

    def _frames_to_clips(self, x: Tensor) -> Tensor:
        nt = x.shape[0]
        t = self.num_segments
        if nt % t:
            raise ValueError(f"{type(self).__name__}: batch {nt} is not a multiple of num_segments={t}")
        return x.view(nt // t, t, *x.shape[1:])  # (N, T, C, H, W)

    def gate(self, x: Tensor) -> Tensor:
        """The kernel gate ``G`` (eq. 1): ``(N, O, C/groups, *k)``, one per sample (per video
        with ``num_segments``); all ones when the kernel has a single position."""
        n = x.shape[0] // (self.num_segments or 1)
        shape = (n, *self.weight.shape)
        if self.context_gate is None:
            return x.new_ones(shape)
        return self.context_gate(self._pool_context(x)).view(shape)

    def forward(self, x: Tensor) -> Tensor:
        if not self.gated:
            return super().forward(x)  # type: ignore[misc]
        weight = self.weight * self.gate(x)  # (N, O, C/g, *k)
        n = weight.shape[0]
        if self.num_segments is not None:  # frames of one video share a kernel: batch = time
            x = self._frames_to_clips(x).transpose(0, 1).flatten(1, 2)  # (T, N*C, H, W)
        else:
            x = x.reshape(1, -1, *x.shape[2:])  # (1, N*C, *S)
        bias = None if self.bias is None else self.bias.repeat(n)
        padding = self.padding
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = 0
        conv = (F.conv1d, F.conv2d, F.conv3d)[self._spatial_dims - 1]
        y = conv(x, weight.flatten(0, 1), bias, self.stride, padding, self.dilation, self.groups * n)  # (B, N*O, *S')
        if self.num_segments is not None:
            t = y.shape[0]
            return y.view(t, n, self.out_channels, *y.shape[2:]).transpose(0, 1).flatten(0, 1)
        return y.view(n, self.out_channels, *y.shape[2:])

    def extra_repr(self) -> str:
        s = super().extra_repr()  # type: ignore[misc]
        s += f", context_size={self.context_size}"
        if self.num_segments is not None:
            s += f", num_segments={self.num_segments}"
        return s


_PLAIN_CONV: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


class ContextGatedConv1d(_ContextGatedConvNd, nn.Conv1d):
    """Context-gated ``nn.Conv1d`` on ``(N, C, L)``; context pooled to ``context_size``
    (default: the kernel size). Same constructor, ``weight`` and ``bias`` as ``nn.Conv1d``."""

    _spatial_dims = 1


class ContextGatedConv2d(_ContextGatedConvNd, nn.Conv2d):
    """Context-gated ``nn.Conv2d`` on ``(N, C, H, W)``; context pooled to ``context_size``
    (default: the kernel size).

    With ``num_segments=T`` it takes the ``(N*T, C, H, W)`` frames of TSN/TSM models, pools the
    context of each video over a ``(T', H', W')`` cube (default ``k x k x k``, so
    ``d = k^3 // 2 + 1``) and applies one gated kernel to all frames of the video.
    """

    _spatial_dims = 2


class ContextGatedConv3d(_ContextGatedConvNd, nn.Conv3d):
    """Context-gated ``nn.Conv3d`` on ``(N, C, T, H, W)``.

    ``context_size`` (default: the kernel size) sets the pooled context: a ``3x1x1`` temporal
    convolution gets 1-D temporal context (the paper's CGC-1D in P3D, sec. 3.3) and
    ``context_size=(3, 3, 3)`` on a ``1x3x3`` spatial convolution gives the spatio-temporal cube
    of CGC-3D; ``d = prod(context_size) // 2 + 1``.
    """

    _spatial_dims = 3
