"""Context-gated lightweight convolution (CGC paper, sec. 3.4) for fairseq's LightConv encoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from fairseq.modules.lightweight_convolution import LightweightConv1dTBC
from torch import Tensor, nn


def masked_adaptive_pool(x: Tensor, mask: Tensor | None, bins: int) -> Tensor:
    """Average-pool each sequence's valid steps to ``bins`` cells, ignoring padding.

    ``x``: ``(B, H, T)``; ``mask``: ``(B, T)``, True at padding (or None). A sequence of length
    ``L >= bins`` is pooled as ``adaptive_avg_pool1d`` would pool it alone (cell ``j`` averages
    steps ``[floor(jL/bins), ceil((j+1)L/bins))``); a shorter one is zero-padded to ``bins``.
    Left- or right-padded batches give the same result as each sentence alone. -> ``(B, H, bins)``.
    """
    b, _, t = x.shape
    valid = torch.ones(b, t, dtype=torch.bool, device=x.device) if mask is None else ~mask
    length = valid.sum(1, keepdim=True)  # (B, 1)
    rank = valid.cumsum(1) - 1  # position of each valid step within its sentence, (B, T)
    j = torch.arange(bins, device=x.device)[None, :, None]  # (1, bins, 1)
    long = length[:, :, None] >= bins  # (B, 1, 1)
    start = torch.where(long, (j * length[:, :, None]) // bins, j)
    end = torch.where(long, -((-(j + 1) * length[:, :, None]) // bins), j + 1)
    r = rank[:, None, :]  # (B, 1, T)
    member = valid[:, None, :] & (r >= start) & (r < end)  # (B, bins, T)
    weights = member.to(x.dtype)
    weights = weights / weights.sum(-1, keepdim=True).clamp(min=1)
    return torch.einsum("bht,bjt->bhj", x, weights)


class BiasFreeLinear(nn.Module):
    """``y = x W^T`` with ``weight (out, in)`` and no ``bias`` entry at all. ``nn.Linear(bias=False)``
    registers ``bias = None``, and fairseq's trainer catalogues every ``None`` parameter as one
    shared tensor (``detected shared parameter: ... <- decoder.output_projection.bias``)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight)

    def extra_repr(self) -> str:
        return f"in_features={self.weight.shape[1]}, out_features={self.weight.shape[0]}"


class ContextGatedLightweightConv1dTBC(LightweightConv1dTBC):
    """fairseq's ``LightweightConv1dTBC`` (weight ``(H, 1, K)``, softmax over K, DropConnect, heads
    over contiguous channels) whose kernel is gated per sentence by its global context (CGC,
    sec. 3.4)::

        c   = pool(x)                 # (B, H, 3K): channels averaged into heads, time into 3K cells
        G   = sigmoid(D relu(LN(E c)))    # E: 3K -> d, d = 3K // 2 + 1; D: d -> K; no channel interacting
        W_b = softmax(W) * G_b        # (B, H, K), then DropConnect

    ``forward(x, padding_mask=mask)``: with the batch's padding mask (``(B, T)``, True at
    padding) the padding never enters ``c`` (:func:`masked_adaptive_pool`), as
    :class:`~seqctx.mt.models.ContextGatedLightConvEncoderLayer` passes it; without one every
    step is context. Encoder-only: no incremental state.
    """

    def __init__(
        self,
        input_size: int,
        kernel_size: int = 1,
        padding_l: int | None = None,
        num_heads: int = 1,
        weight_dropout: float = 0.0,
        weight_softmax: bool = False,
        bias: bool = False,
    ) -> None:
        super().__init__(input_size, kernel_size, padding_l, num_heads, weight_dropout, weight_softmax, bias)
        context = 3 * kernel_size
        latent = context // 2 + 1
        self.context_size = context
        self.context_encode = BiasFreeLinear(context, latent)
        self.context_norm = nn.LayerNorm(latent)
        self.gate_decode = BiasFreeLinear(latent, kernel_size)
        nn.init.xavier_uniform_(self.context_encode.weight)  # Glorot init for NLP (sec. 3.1)
        nn.init.xavier_uniform_(self.gate_decode.weight)

    def gate(self, x: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """``(T, B, C)`` -> the kernel gate ``(B, H, K)``."""
        t, b, c = x.shape
        heads = x.view(t, b, self.num_heads, c // self.num_heads).mean(-1).permute(1, 2, 0)  # (B, H, T)
        ctx = masked_adaptive_pool(heads, padding_mask, self.context_size)  # (B, H, 3K)
        return torch.sigmoid(self.gate_decode(F.relu(self.context_norm(self.context_encode(ctx)))))

    def forward(
        self, x: Tensor, incremental_state: dict | None = None, unfold: bool = False, padding_mask: Tensor | None = None
    ) -> Tensor:
        """``(T, B, C)`` -> ``(T, B, C)``; ``padding_mask (B, T)`` keeps padding out of the context
        (``unfold`` is fairseq's signature; one band-matrix path serves both)."""
        if incremental_state is not None:
            raise ValueError(
                "ContextGatedLightweightConv1dTBC is an encoder layer: incremental decoding is not supported"
            )
        t, b, c = x.shape
        h, k = self.num_heads, self.kernel_size
        weight = self.weight.view(h, k)
        if self.weight_softmax:
            weight = F.softmax(weight.float(), dim=1).type_as(weight)
        weight = weight[None] * self.gate(x, padding_mask).type_as(weight)  # (B, H, K)
        # band matrices, one per sentence and head, as LightweightConv1dTBC's expanded path
        weight = weight.reshape(b * h, 1, k).expand(b * h, t, k)
        band = weight.new_zeros(b * h, t, t + k - 1)
        band.as_strided((b * h, t, k), (t * (t + k - 1), t + k, 1)).copy_(weight)
        band = self.weight_dropout_module(band.narrow(2, self.padding_l, t))  # DropConnect
        xs = x.view(t, b * h, c // h).transpose(0, 1)  # (B*H, T, R)
        out = torch.bmm(band, xs).transpose(0, 1).reshape(t, b, c)
        if self.bias is not None:
            out = out + self.bias.view(1, 1, -1)
        return out

    def extra_repr(self) -> str:
        return super().extra_repr() + f", context_size={self.context_size}"
