"""Temporal Shift Module (Lin et al., "TSM: Temporal Shift Module for Efficient Video
Understanding", ICCV 2019)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["TemporalShift", "temporal_shift"]


def temporal_shift(x: Tensor, num_segments: int, fold_div: int = 8, online: bool = False) -> Tensor:
    """Shift part of the channels of ``(N*T, C, *S)`` frames along time (the TSM paper, sec. 3).

    With ``fold = C // fold_div``: channels ``[0, fold)`` of frame ``t`` take frame ``t + 1``,
    channels ``[fold, 2 fold)`` take frame ``t - 1``, the rest stay; frames shifted in from outside
    the clip are zeros. ``online`` (the paper's uni-directional shift of its online models; the
    official online demo's ``shift_buffer``): channels ``[0, fold)`` of frame ``t`` take
    frame ``t - 1`` (zeros for the first frame), the rest stay: no frame sees a later one, so a
    stream is recognised one frame at a time (:mod:`seqctx.video.online`). Returns a new tensor of
    the same shape.
    """
    nt, c = x.shape[:2]
    if nt % num_segments:
        raise ValueError(f"temporal_shift: the batch dimension {nt} is not a multiple of num_segments={num_segments}")
    fold = c // fold_div
    v = x.view(nt // num_segments, num_segments, c, *x.shape[2:])  # (N, T, C, *S)
    zero = torch.zeros_like(v[:, :1, :fold])  # (N, 1, fold, *S): what comes in from outside the clip
    if online:
        past = torch.cat([zero, v[:, :-1, :fold]], 1)  # t <- t - 1
        return torch.cat([past, v[:, :, fold:]], 2).view_as(x)
    left = torch.cat([v[:, 1:, :fold], zero], 1)  # shift left: t <- t + 1
    right = torch.cat([zero, v[:, :-1, fold : 2 * fold]], 1)  # shift right: t <- t - 1
    # built by concatenation, not by assigning into a zero tensor: the same copies, and an exported
    # graph of slices and concats (slice assignment becomes ScatterND and transposes in ONNX)
    return torch.cat([left, right, v[:, :, 2 * fold :]], 2).view_as(x)


class TemporalShift(nn.Module):
    """Module form of :func:`temporal_shift`, for ``(N*T, C, H, W)`` frames of TSN/TSM models."""

    def __init__(self, num_segments: int, fold_div: int = 8, online: bool = False) -> None:
        super().__init__()
        if num_segments < 1 or fold_div < 1:
            raise ValueError(f"TemporalShift needs num_segments >= 1 and fold_div >= 1, got {num_segments}, {fold_div}")
        self.num_segments = num_segments
        self.fold_div = fold_div
        self.online = online

    def extra_repr(self) -> str:
        return f"num_segments={self.num_segments}, fold_div={self.fold_div}" + (", online" if self.online else "")

    def forward(self, x: Tensor) -> Tensor:
        return temporal_shift(x, self.num_segments, self.fold_div, self.online)
