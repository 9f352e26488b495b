"""CGC's per-sample convolution (eq. 2) as one autograd function that keeps no gated kernels.

``kernel_gated_conv(x, weight, g1, g2, ...)`` convolves the inputs of each *gate unit* ``u`` (a
sample, or a video's time slice) with ``W * G[u]``, where the gate comes from its two logits (eq. 1)::

    G[u, h, i, k] = sigmoid(G1[u, grp(h) * C/g + i, k] + G2[u, h, k])

The input is units-major, ``x (U, B, C, *S)``, where ``B`` counts the inputs that share a unit's
kernel (1 for images, the slice's frames for video): a view of the frames, so nothing is copied
for backward. Two engines compute it, chosen by device and shape (:func:`use_unfold`): the
batch-grouped convolution (``groups = U * g``; oneDNN, cuDNN; always on CPU, where it measured
fastest), and unfold + batched matmul (the official CGC code's formulation) for deep 2D layers on
small maps elsewhere. Under ``torch.export`` (and so ``torch.onnx.export``) a third one: windows
taken by a depthwise convolution with one-hot kernels, multiplied by each unit's kernel in one
batched matmul -- exact for any number of units, where a grouped convolution's ``group`` would be
fixed in the graph. Forward saves ``x``, ``W``
and the logits ``G1 (U, C, K)`` and ``G2 (U, O, K)`` -- never a ``U x O x C/g x K`` tensor -- and
backward rebuilds the gated kernels to get the input, weight and logit gradients. Units are
processed in chunks whose transient gated kernels (and unfolded columns) stay under ``budget``
bytes and whose output stays under 2^31 elements: a smaller budget means less peak memory and
more, smaller calls. Double backward is not supported. Under ``torch.compile``/``torch.export``
there is one chunk (the compiler plans memory).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

__all__ = ["DEFAULT_BUDGET", "default_budget", "gate_from_logits", "kernel_gated_conv", "use_unfold"]

# Bytes of transient gated kernels (and unfolded columns) per chunk. On CPU, chunks that stay near
# the cache are fastest (measured: 512x7x7, batch 32, fwd+bwd 0.75-0.8 s at 4-8 MiB, 1.3-1.9 s at
# 128 MiB; the larger maps of stages 1-2 within 12%); a GPU wants fewer, larger calls.
DEFAULT_BUDGET = {"cpu": 8 * 2**20, "cuda": 512 * 2**20}
_MAX_ELEMENTS = 2**31 - 1  # oneDNN/cuDNN index tensors with 32-bit offsets


def gate_from_logits(g1: Tensor, g2: Tensor, groups: int) -> Tensor:
    """``G1 (U, C, K)``, ``G2 (U, O, K)`` -> ``G (U, O, C/groups, K) = sigmoid(G1 + G2)`` (eq. 1),
    output channel ``h`` of group ``grp(h)`` paired with its group's input channels."""
    u, c, k = g1.shape
    o = g2.shape[1]
    logits = g1.view(u, groups, 1, c // groups, k) + g2.view(u, groups, o // groups, 1, k)
    return logits.sigmoid_().view(u, o, c // groups, k)


def default_budget(device: torch.device) -> int:
    """:data:`DEFAULT_BUDGET` of the device's type (the CUDA one for other accelerators)."""
    return DEFAULT_BUDGET.get(device.type, DEFAULT_BUDGET["cuda"])


def _chunks(units: int, per_unit_bytes: int, per_unit_outputs: int, budget: int) -> list[tuple[int, int]]:
    if torch.compiler.is_compiling():
        return [(0, units)]
    size = max(1, min(budget // max(per_unit_bytes, 1), _MAX_ELEMENTS // max(per_unit_outputs, 1)))
    return [(lo, min(lo + size, units)) for lo in range(0, units, size)]


def _conv_dtype(x: Tensor) -> torch.dtype:
    """The dtype autocast would run the convolution in (the input's own without autocast)."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def use_unfold(device: torch.device, dims: int, groups: int, depth: int, columns: int) -> bool:
    """The engine rule. On CPU the batch-grouped convolution, everywhere: measured on a 2-core
    AVX-512 EPYC (torch 2.14, oneDNN), it was as fast or faster than unfold + batched matmul at
    every ResNet-50 stage for batches of 32 images, TSM's and I3D's 112-pixel video shapes
    (2 videos x 3 time slices, stage 4: 49 vs 74 ms forward+backward) and TSM at 224 pixels; on
    CPUs whose matmul beats their grouped convolution the old shape rule (below) may win again.
    On other devices unfold + batched matmul (the official CGC code's formulation) for 2D
    convolutions without groups whose unit has a deep window (``depth = C * K >=
    UNFOLD_MIN_DEPTH``) over few output positions (``columns = frames * H' * W' <=
    UNFOLD_MAX_COLUMNS``: ResNet-50's stages 3-4); not measured on a GPU yet
    (``scripts/bench_operators.py --device cuda`` decides)."""
    if device.type == "cpu":
        return False
    return dims == 2 and groups == 1 and depth >= UNFOLD_MIN_DEPTH and columns <= UNFOLD_MAX_COLUMNS


UNFOLD_MAX_COLUMNS = 14 * 14
UNFOLD_MIN_DEPTH = 256 * 9


class _Geometry:
    """The fixed arguments of one gated convolution and the two engines that compute it."""

    def __init__(self, x: Tensor, weight: Tensor, stride: list[int], padding: list[int], dilation: list[int],
                 groups: int, dtype: torch.dtype) -> None:  # fmt: skip
        self.stride, self.padding, self.dilation, self.groups, self.dtype = stride, padding, dilation, groups, dtype
        self.o, self.cg, *self.k = weight.shape
        self.c, self.kk, self.frames, self.size = self.cg * groups, math.prod(self.k), x.shape[1], list(x.shape[3:])
        self.out = [(s + 2 * p - d * (kw - 1) - 1) // st + 1
                    for s, p, d, kw, st in zip(self.size, padding, dilation, self.k, stride, strict=True)]  # fmt: skip
        self.unfold = use_unfold(x.device, len(self.k), groups, self.c * self.kk, self.frames * math.prod(self.out))
        self.exporting = torch.compiler.is_exporting()

    def chunks(self, units: int, budget: int) -> list[tuple[int, int]]:
        kernel = self.o * self.cg * self.kk * 4  # float32 gate and kernels
        columns = self.c * self.kk * self.frames * math.prod(self.out) * 4 if self.unfold else 0
        return _chunks(units, 2 * kernel + 2 * columns, self.frames * self.o * math.prod(self.out), budget)

    def columns(self, x: Tensor) -> Tensor:
        """``x (n, B, C, H, W)`` -> ``(n, C*K, B*L)``: each unit's sliding windows, frames side by side."""
        n, b = x.shape[:2]
        cols = torch.nn.functional.unfold(x.reshape(n * b, self.c, *self.size), self.k, self.dilation, self.padding,
                                          self.stride)  # (n*B, C*K, L)  # fmt: skip
        return cols.view(n, b, cols.shape[1], -1).transpose(1, 2).reshape(n, cols.shape[1], -1)

    def windows(self, x: Tensor, wg: Tensor, bias: Tensor | None) -> Tensor:
        """The export engine: the windows ``(n*B, C*K, *S')`` of ``x (n, B, C, *S)`` come from one
        depthwise convolution with one-hot kernels (output channel ``c*K + j`` copies input
        channel ``c`` at kernel offset ``j``: exact), then each unit's gated kernels
        ``wg (n, O, C/g, K)`` multiply them group by group (one batched matmul) -> ``(n, B, O,
        *S')``. No shape in it depends on ``n``; slicing would make a node per kernel offset, and
        onnxruntime's Einsum took 5x its MatMul here."""
        n, b, g, dims = x.shape[0], self.frames, self.groups, len(self.k)
        one_hot = torch.eye(self.kk, dtype=x.dtype, device=x.device).view(self.kk, 1, *self.k)
        conv = (F.conv1d, F.conv2d, F.conv3d)[dims - 1]
        cols = conv(x.reshape(n * b, self.c, *self.size), one_hot.repeat(self.c, *[1] * (dims + 1)), None,
                    self.stride, self.padding, self.dilation, self.c)  # (n*B, C*K, *S')  # fmt: skip
        ckk = self.cg * self.kk
        cols = cols.reshape(n, b, g, ckk, -1).permute(0, 2, 3, 1, 4).reshape(n, g, ckk, -1)  # (n, g, C/g*K, B*L)
        y = wg.reshape(n, g, self.o // g, ckk) @ cols  # (n, g, O/g, B*L): one batched GEMM
        y = y.reshape(n, self.o, b, -1).transpose(1, 2).reshape(n, b, self.o, *self.out)
        return y if bias is None else y + bias.view(self.o, *[1] * dims)

    def forward(self, x: Tensor, wg: Tensor, bias: Tensor | None) -> Tensor:
        """``x (n, B, C, *S)``, gated kernels ``wg (n, O, C/g, K)`` -> ``(n, B, O, *S')``."""
        n, b, o = wg.shape[0], self.frames, self.o
        if self.exporting:
            return self.windows(x, wg, bias)
        if self.unfold:
            y = torch.bmm(wg.view(n, o, -1), self.columns(x))  # (n, O, B*L)
            y = y.view(n, o, b, -1).transpose(1, 2).reshape(n, b, o, *self.out)
            return y if bias is None else y + bias.view(o, *[1] * len(self.out))
        xg = x.transpose(0, 1).reshape(b, n * self.c, *self.size)  # (B, n*C, *S): units in the groups
        y = torch.ops.aten.convolution.default(
            xg, wg.reshape(n * o, self.cg, *self.k), None if bias is None else bias.repeat(n), self.stride,
            self.padding, self.dilation, False, [0] * len(self.k), self.groups * n,
        )  # (B, n*O, *S')  # fmt: skip
        return y.view(b, n, o, *self.out).transpose(0, 1)

    def backward(self, x: Tensor, wg: Tensor, gy: Tensor, need_x: bool) -> tuple[Tensor | None, Tensor]:
        """``gy (n, B, O, *S')`` -> gradients of ``x`` (``(n, B, C, *S)``, or None) and of the
        gated kernels ``(n, O, C/g, K)``."""
        n, b, o = wg.shape[0], self.frames, self.o
        if self.unfold:
            gy = gy.reshape(n, b, o, -1).transpose(1, 2).reshape(n, o, -1)  # (n, O, B*L)
            gwg = torch.bmm(gy, self.columns(x).transpose(1, 2))  # (n, O, C*K)
            gx = None
            if need_x:
                gcols = torch.bmm(wg.view(n, o, -1).transpose(1, 2), gy)  # (n, C*K, B*L)
                gcols = gcols.view(n, gcols.shape[1], b, -1).transpose(1, 2).reshape(n * b, gcols.shape[1], -1)
                gx = torch.nn.functional.fold(gcols, self.size, self.k, self.dilation, self.padding, self.stride)
                gx = gx.view(n, b, self.c, *self.size)
            return gx, gwg.view(n, o, self.cg, self.kk)
        xg = x.transpose(0, 1).reshape(b, n * self.c, *self.size)
        gyg = gy.transpose(0, 1).reshape(b, n * o, *self.out)
        gx, gwg, _ = torch.ops.aten.convolution_backward(
            gyg, xg, wg.reshape(n * o, self.cg, *self.k), None, self.stride, self.padding, self.dilation, False,
            [0] * len(self.k), self.groups * n, [need_x, True, False],
        )  # fmt: skip
        if need_x:
            gx = gx.view(b, n, self.c, *self.size).transpose(0, 1)
        return gx, gwg.view(n, o, self.cg, self.kk)


class _KernelGatedConv(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: FunctionCtx, x: Tensor, weight: Tensor, g1: Tensor, g2: Tensor, bias: Tensor | None,
        stride: list[int], padding: list[int], dilation: list[int], groups: int, budget: int,
    ) -> Tensor:  # fmt: skip
        dtype = _conv_dtype(x)
        geo = _Geometry(x, weight, stride, padding, dilation, groups, dtype)
        ys = []
        with torch.autocast(x.device.type, enabled=False):
            xc, b = x.to(dtype), None if bias is None else bias.to(dtype)
            w = weight.view(1, geo.o, geo.cg, geo.kk)
            for lo, hi in geo.chunks(g1.shape[0], budget):
                wg = gate_from_logits(g1[lo:hi], g2[lo:hi], groups).mul_(w).to(dtype)  # (n, O, C/g, K)
                ys.append(geo.forward(xc[lo:hi], wg, b))
        ctx.save_for_backward(x, weight, g1, g2)
        ctx.geometry, ctx.budget, ctx.has_bias = geo, budget, bias is not None
        return torch.cat(ys) if len(ys) > 1 else ys[0].contiguous()  # (U, B, O, *S')

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_y: Tensor) -> tuple[Tensor | None, ...]:
        x, weight, g1, g2 = ctx.saved_tensors
        geo: _Geometry = ctx.geometry
        c, o, cg, kk, groups = geo.c, geo.o, geo.cg, geo.kk, geo.groups
        units, need_x = g1.shape[0], ctx.needs_input_grad[0]
        grad_x = torch.empty(x.shape, dtype=x.dtype, device=x.device) if need_x else None
        grad_w = torch.zeros(o, cg, kk, dtype=torch.float32, device=weight.device)
        grad_g1, grad_g2 = torch.empty_like(g1), torch.empty_like(g2)
        w = weight.view(1, o, cg, kk).float()
        xc, gy = x.to(geo.dtype), grad_y.to(geo.dtype)
        for lo, hi in geo.chunks(units, ctx.budget):
            n = hi - lo
            gate = gate_from_logits(g1[lo:hi].float(), g2[lo:hi].float(), groups)  # (n, O, C/g, K)
            gx, gwg = geo.backward(xc[lo:hi], (gate * w).to(geo.dtype), gy[lo:hi], need_x)
            if need_x:
                grad_x[lo:hi] = gx
            t = gwg.float().mul_(gate)  # dL/d(W * G) * G
            grad_w += t.sum(0)
            # dL/dlogit = dL/d(W * G) * W * G (1 - G) = (t - t G) W, in place: no (1 - G) temporary
            glogit = t.addcmul_(t, gate, value=-1).mul_(w)  # (n, O, C/g, K)
            glogit = glogit.view(n, groups, o // groups, cg, kk)
            grad_g1[lo:hi] = glogit.sum(2).reshape(n, c, kk)
            grad_g2[lo:hi] = glogit.sum(3).reshape(n, o, kk)
        grad_b = None
        if ctx.has_bias:
            grad_b = grad_y.sum([0, 1, *range(3, grad_y.dim())]).to(weight.dtype)
        grad_w = grad_w.view(weight.shape).to(weight.dtype)
        return grad_x, grad_w, grad_g1, grad_g2, grad_b, None, None, None, None, None


def kernel_gated_conv(
    x: Tensor, weight: Tensor, g1: Tensor, g2: Tensor, bias: Tensor | None = None,
    stride: tuple[int, ...] = (1,), padding: tuple[int, ...] = (0,), dilation: tuple[int, ...] = (1,),
    groups: int = 1, budget: int | None = None,
) -> Tensor:  # fmt: skip
    """Convolve unit ``u``'s inputs with ``weight * G[u]`` (``G`` from the logits, eq. 1).

    Shapes: ``x (U, B, C, *S)``, ``weight (O, C/groups, *k)``, ``g1 (U, C, prod(k))``,
    ``g2 (U, O, prod(k))``, ``bias (O,)`` -> ``(U, B, O, *S')``. ``stride``, ``padding``
    (numbers, zero padding) and ``dilation`` have one entry per spatial dim; ``budget`` (bytes,
    default :func:`default_budget`) bounds each chunk's transient gated kernels.
    """
    dims = weight.dim() - 2
    args = [list(a) * (dims if len(a) == 1 else 1) for a in (stride, padding, dilation)]
    budget = default_budget(x.device) if budget is None else budget
    return _KernelGatedConv.apply(x, weight, g1, g2, bias, *args, groups, budget)
