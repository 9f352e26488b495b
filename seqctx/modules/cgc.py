"""Context-Gated Convolution (Lin et al., "Context-Gated Convolution", ECCV 2020).

A CGC layer is a convolution whose kernel is modulated, per sample, by a gate computed from the
global context of its input (sec. 2.2)::

    C  = relu(BN(E pool(x)))                      context encoding, (N, c, d), E shared by channels
    O  = relu(BN(I relu(BN'(E pool(x)))))         channel interacting, (N, o, d), grouped linear I
    G1 = C D_c,  G2 = O D_o                       gate decoding, (N, c, k) and (N, o, k)
    G[n, h, i, k] = sigmoid(G1[n, i, k] + G2[n, h, k])          (eq. 1)
    y[n] = conv(x[n], W * G[n])                                 (eq. 2)

with ``k`` the kernel's positions and ``d = prod(context_size) // 2 + 1`` latents. Video layers
(sec. 3.3) decode ``t x k`` values, one gate per time slice of the ``t x k x k`` context cube.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .gated_conv import gate_from_logits, kernel_gated_conv
from .tables import CONV_BY_DIMS

__all__ = ["ContextGate", "ContextGatedConv1d", "ContextGatedConv2d", "ContextGatedConv3d", "slice_bounds"]

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
        time_slices: ``t``: the video gate's temporal slices (sec. 3.3: "the Gate Decoding Module
            generates o x c x t x k x k gates"); ``D_c`` and ``D_o`` then decode ``t * k`` values.

    Shapes: ``forward(context (N, c, context_numel)) -> gate (N, o, c/groups, t, k)`` in ``(0, 1)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_numel: int,
        context_numel: int,
        groups: int = 1,
        channels_per_group: int = 16,
        time_slices: int = 1,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.groups = groups
        self.time_slices = time_slices
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
        # Gate decoding: D_c and D_o, each shared across channels; t * k values for t time slices.
        self.decode_in = nn.Linear(latent, time_slices * kernel_numel, bias=False)
        self.decode_out = nn.Linear(latent, time_slices * kernel_numel, bias=False)
        for lin in (self.encode, self.interact, self.decode_in, self.decode_out):
            nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")  # He et al. (2015), sec. 3.1

    def logits(self, context: Tensor) -> tuple[Tensor, Tensor]:
        """The two halves of the gate's logit (eq. 1): ``G1 (N, c, t*k)`` from context encoding and
        ``G2 (N, o, t*k)`` from channel interacting."""
        n, c, _ = context.shape
        o, ng = self.out_channels, self.interact_groups
        e = self.encode(context)  # (N, c, d)
        g1 = self.decode_in(F.relu(self.encode_norm(e)))  # (N, c, t*k)
        z = F.relu(self.interact_in_norm(e))  # (N, c, d)
        d = z.shape[-1]
        z = self.interact(z.view(n, ng, c // ng, d).transpose(2, 3))  # (N, ng, d, o/ng)
        z = z.transpose(2, 3).reshape(n, o, d)  # (N, o, d)
        g2 = self.decode_out(F.relu(self.interact_norm(z)))  # (N, o, t*k)
        return g1, g2

    def forward(self, context: Tensor) -> Tensor:
        gate = gate_from_logits(*self.logits(context), self.groups)  # (N, o, c/g, t*k)
        return gate.view(*gate.shape[:3], self.time_slices, -1)


def _adaptive_avg_pool_separable(x: Tensor, size: tuple[int, ...]) -> Tensor:
    """Adaptive average pooling of ``(N, C, *S)`` to ``size`` as one averaging matrix per spatial
    dim (bin ``i`` of ``n`` over ``m`` inputs: ``[floor(i m / n), ceil((i + 1) m / n))``, as
    PyTorch's): the mean over a box is the product of the means along its sides. The form
    ``torch.export``/ONNX graphs take (shapes other than the batch are fixed there)."""
    for d, (m, n) in enumerate(zip(x.shape[2:], size, strict=True)):
        bins = [(i * m // n, -(-(i + 1) * m // n)) for i in range(n)]
        rows = [[1.0 / (hi - lo) if lo <= j < hi else 0.0 for j in range(m)] for lo, hi in bins]
        average = torch.tensor(rows, dtype=x.dtype, device=x.device)  # (n, m): one constant in a graph
        x = (x.transpose(2 + d, -1) @ average.T).transpose(2 + d, -1)
    return x


def slice_bounds(num_frames: int, time_slices: int) -> list[tuple[int, int]]:
    """The frames ``[lo, hi)`` of each time slice: frame ``f`` of ``T`` belongs to slice
    ``floor(f * t / T)`` (the time cells of the ``t x k x k`` context cube, in order). A slice may
    be empty (``T < t``)."""
    t, T = time_slices, num_frames
    return [(-(-s * T // t), -(-(s + 1) * T // t)) for s in range(t)]


class _ContextGatedConvNd:
    """Shared machinery of the CGC layers; mixed in before ``nn.Conv{1,2,3}d``.

    The per-sample convolution (:func:`~seqctx.modules.gated_conv.kernel_gated_conv`) folds the
    batch into the group dimension (``(1, N*C, *S)`` convolved with the stacked gated kernels
    ``(N*O, C/groups, *k)``, ``groups = N * groups``) or, off CPU on small maps, multiplies
    unfolded windows by each sample's kernel (:func:`~seqctx.modules.gated_conv.use_unfold`), in
    chunks of samples whose gated kernels stay under ``kernel_budget`` bytes (default: per device,
    :data:`~seqctx.modules.gated_conv.DEFAULT_BUDGET`).
    Only the input, the weight and the gate's logits (``(N, C, k)`` and ``(N, O, k)``) are kept for
    backward, which rebuilds the gated kernels: no ``N x O x C/groups x k`` tensor lives between
    forward and backward.

    Video (sec. 3.3): with ``num_segments=T`` (the ``(N*T, C, H, W)`` frames of TSN/TSM) or on a
    ``1 x k x k`` kernel of ``ContextGatedConv3d`` with a spatio-temporal ``context_size`` whose
    temporal size is ``t > 1``, the gate has a time axis, ``(N, O, C/groups, t, *k)``: frame ``f``
    (output time step ``f`` of a 3D convolution) is convolved with ``W * G[n, :, :, s]``,
    ``s = floor(f * t / T)``, so the frames of one slice share a kernel and the batch of a
    convolution call is those frames. ``temporal_gate=False`` decodes one gate per video for all
    frames (an ablation).
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
        temporal_gate: bool = True,
        channels_per_group: int = 16,
        kernel_budget: int | None = None,
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
        self.kernel_budget = kernel_budget
        # the video gate's time slices: frame models, and 1 x k x k kernels of 3D models
        frames = num_segments is not None or (self._spatial_dims == 3 and self.kernel_size[0] == 1)
        self.time_slices = context_size[0] if (temporal_gate and frames) else 1
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
                self.time_slices,
            ).to(device=device, dtype=dtype)

    @classmethod
    def from_conv(cls, conv: nn.Module, **kwargs: object) -> _ContextGatedConvNd:
        """A CGC layer with ``conv``'s hyper-parameters and a copy of its weight and bias.

        ``kwargs`` go to the constructor (``context_size``, ``num_segments``, ...).
        """
        base = CONV_BY_DIMS[cls._spatial_dims]
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
            x = self._frames_to_clips(x, self.num_segments).transpose(1, 2)  # (N, C, T, H, W)
        if torch.compiler.is_exporting():  # ONNX has no adaptive pooling to sizes other than 1
            return _adaptive_avg_pool_separable(x, self.context_size).flatten(2)
        pool = (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d)[x.dim() - 3]
        return pool(x, self.context_size).flatten(2)

    def _frames_to_clips(self, x: Tensor, num_frames: int) -> Tensor:
        """``(N*T, C, H, W) -> (N, T, C, H, W)``."""
        nt = x.shape[0]
        if nt % num_frames:
            raise ValueError(f"{type(self).__name__}: batch {nt} is not a multiple of num_segments={num_frames}")
        return x.view(nt // num_frames, num_frames, *x.shape[1:])

    def gate(self, x: Tensor) -> Tensor:
        """The kernel gate ``G`` (eq. 1): ``(N, O, C/groups, *k)``, one per sample (per video with
        ``num_segments``), or ``(N, O, C/groups, t, *k)`` with the video gate's ``t`` time
        slices; all ones when the kernel has a single position."""
        n = x.shape[0] // (self.num_segments or 1)
        o, cg, *k = self.weight.shape
        shape = (n, o, cg, self.time_slices, *k) if self.time_slices > 1 else (n, o, cg, *k)
        if self.context_gate is None:
            return x.new_ones(shape)
        return self.context_gate(self._pool_context(x)).view(shape)

    def forward(self, x: Tensor) -> Tensor:
        """The gated convolution; the output keeps the input's memory format (``channels_last``
        / ``channels_last_3d`` in a channels-last model, so the layers after it need no copy)."""
        if not self.gated:
            return super().forward(x)  # type: ignore[misc]
        g1, g2 = self.context_gate.logits(self._pool_context(x))  # (N, C, t*K), (N, O, t*K)
        if self.num_segments is not None:
            y = self._conv_frames(*self._pad(x), g1, g2, self.num_segments)
        elif self.time_slices > 1:
            y = self._conv_clip_frames(x, g1, g2)
        else:
            xp, padding = self._pad(x)
            y = kernel_gated_conv(
                xp.unsqueeze(1), self.weight, g1, g2, self.bias, self.stride, padding, self.dilation, self.groups,
                self.kernel_budget,
            ).squeeze(1)  # (N, 1, O, *S') -> (N, O, *S')  # fmt: skip
        channels_last = {4: torch.channels_last, 5: torch.channels_last_3d}.get(x.dim())
        if channels_last is not None and not x.is_contiguous() and x.is_contiguous(memory_format=channels_last):
            return y.contiguous(memory_format=channels_last)
        return y

    def _pad(self, x: Tensor) -> tuple[Tensor, tuple[int, ...]]:
        """``(x, padding)`` for the gated convolution: numeric zero padding is left to it (no
        padded copy is kept for backward); ``"same"``/``"valid"`` and other padding modes are
        applied to the input here."""
        if self.padding_mode == "zeros" and not isinstance(self.padding, str):
            return x, self.padding
        mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
        return F.pad(x, self._reversed_padding_repeated_twice, mode=mode), (0,) * self._spatial_dims

    def _conv_frames(self, x: Tensor, padding: tuple[int, ...], g1: Tensor, g2: Tensor, num_frames: int) -> Tensor:
        """``(N*T, C, H, W)`` frames -> ``(N*T, O, H', W')``, zero-padded by ``padding``: each time
        slice's frames of a video with their slice's gated kernel, the slice's frames as the batch
        of its convolution."""
        clips = self._frames_to_clips(x, num_frames)  # (N, T, C, H, W)
        k = g1.shape[-1] // self.time_slices
        weight = self.weight.view(self.out_channels, -1, *self.kernel_size[-2:])  # (O, C/g, kh, kw)
        stride, dilation = self.stride[-2:], self.dilation[-2:]
        outs = []
        for s, (lo, hi) in enumerate(slice_bounds(num_frames, self.time_slices)):
            if hi <= lo:
                continue
            g1s, g2s = g1[:, :, s * k : (s + 1) * k].contiguous(), g2[:, :, s * k : (s + 1) * k].contiguous()
            outs.append(kernel_gated_conv(clips[:, lo:hi], weight, g1s, g2s, self.bias, stride, padding, dilation,
                                          self.groups, self.kernel_budget))  # (N, T_s, O, H', W')  # fmt: skip
        y = torch.cat(outs, 1) if len(outs) > 1 else outs[0]  # (N, T, O, H', W')
        return y.flatten(0, 1)

    def _conv_clip_frames(self, x: Tensor, g1: Tensor, g2: Tensor) -> Tensor:
        """A ``1 x k x k`` 3D convolution of ``(N, C, T, H, W)`` with the time-varying gate: output
        step ``f`` reads padded input frame ``f * stride_t``, convolved as a frame."""
        x, padding = self._pad(x)
        if padding[0]:  # zero frames at both ends
            x = F.pad(x, (0, 0, 0, 0, padding[0], padding[0]))
        x = x[:, :, :: self.stride[0]]  # (N, C, T', H, W): the input frame of each output step
        n, c, t_out = x.shape[:3]
        frames = x.transpose(1, 2).reshape(n * t_out, c, *x.shape[3:])  # (N*T', C, H, W)
        y = self._conv_frames(frames, padding[1:], g1, g2, t_out)  # (N*T', O, H', W')
        return y.view(n, t_out, *y.shape[1:]).transpose(1, 2)  # (N, O, T', H', W')

    def extra_repr(self) -> str:
        s = super().extra_repr()  # type: ignore[misc]
        s += f", context_size={self.context_size}"
        if self.num_segments is not None:
            s += f", num_segments={self.num_segments}"
        if self.time_slices > 1:
            s += f", time_slices={self.time_slices}"
        return s


class ContextGatedConv1d(_ContextGatedConvNd, nn.Conv1d):
    """Context-gated ``nn.Conv1d`` on ``(N, C, L)``; context pooled to ``context_size``
    (default: the kernel size). Same constructor, ``weight`` and ``bias`` as ``nn.Conv1d``."""

    _spatial_dims = 1


class ContextGatedConv2d(_ContextGatedConvNd, nn.Conv2d):
    """Context-gated ``nn.Conv2d`` on ``(N, C, H, W)``; context pooled to ``context_size``
    (default: the kernel size).

    With ``num_segments=T`` it takes the ``(N*T, C, H, W)`` frames of TSN/TSM models, pools the
    context of each video over a ``(t, H', W')`` cube (default ``k x k x k``, so
    ``d = k^3 // 2 + 1``) and decodes a gate with ``t`` time slices (sec. 3.3): frame ``f`` uses
    slice ``floor(f * t / T)``; ``temporal_gate=False`` applies one gate to every frame.
    """

    _spatial_dims = 2


class ContextGatedConv3d(_ContextGatedConvNd, nn.Conv3d):
    """Context-gated ``nn.Conv3d`` on ``(N, C, T, H, W)``.

    ``context_size`` (default: the kernel size) sets the pooled context: a ``3x1x1`` temporal
    convolution gets 1-D temporal context (the paper's CGC-1D in P3D, sec. 3.3) and
    ``context_size=(3, 3, 3)`` on a ``1x3x3`` spatial convolution gives the spatio-temporal cube
    of CGC-3D, whose gate has ``t = 3`` time slices (output step ``f`` of ``T'`` uses slice
    ``floor(f * t / T')``; ``temporal_gate=False``: one gate for all steps);
    ``d = prod(context_size) // 2 + 1``.
    """

    _spatial_dims = 3
