"""Recognising a stream one frame at a time with an online TSM (``model.shift: online``).

An online TSM's shift gives channels ``[0, fold)`` of frame ``t`` from frame ``t - 1`` (zeros for
the first frame) and keeps the rest (:func:`~seqctx.modules.temporal_shift`). Run on a clip, every
layer of frame ``t`` depends on frames ``<= t`` only, so the same network can run frame by frame:
each shifted block keeps the ``fold`` channels of the last frame's input to its residual branch
(its *buffer*, ``(N, fold, h, w)``) and hands them to the next frame. That is
:class:`OnlineFrameNet`: ``(frame uint8 (N, H, W, 3), *buffers) -> (logits (N, K), *buffers)``,
the normalisation inside, no state of its own (what ONNX exports); :class:`StreamingRecognizer`
keeps the buffers between calls. Frame ``t``'s logits equal the offline model's logits of frame
``t`` on the whole clip (``model.head(model.trunk(frames))``; tested to 1e-5), so the mean over
a clip's frames is the offline model's prediction.

The smoothed prediction is the mean of the softmax scores of the last ``smoothing`` frames (the
official online demo smooths over its last frames' outputs the same way, against flicker).
"""

from __future__ import annotations

import copy
from collections import deque
from typing import Any

import torch
from torch import Tensor, nn

from seqctx.modules import TemporalShift
from seqctx.video.data.transforms import normalization


class _ShiftStep(nn.Module):
    """An online :class:`TemporalShift` for one frame per stream: channels ``[0, fold)`` come from
    :attr:`incoming` (the previous frame's, zeros when None), and the frame's own are left in
    :attr:`outgoing` for the next one. The caller sets :attr:`incoming` before a forward and
    reads :attr:`outgoing` after it."""

    def __init__(self, fold_div: int) -> None:
        super().__init__()
        self.fold_div = fold_div
        self.incoming: Tensor | None = None
        self.outgoing: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:  # (N, C, h, w): one frame of each of N streams
        fold = x.shape[1] // self.fold_div
        previous = self.incoming if self.incoming is not None else torch.zeros_like(x[:, :fold])
        self.outgoing = x[:, :fold]
        return torch.cat([previous, x[:, fold:]], 1)


def online_shifts(model: nn.Module) -> list[TemporalShift]:
    """The temporal shifts of ``model``, in forward order; a ``ValueError`` unless there are some
    and every one is online."""
    shifts = [m for m in model.modules() if isinstance(m, TemporalShift)]
    if not shifts or not all(s.online for s in shifts):
        raise ValueError(
            "streaming needs a TSM trained with the online shift (model.shift: online); this model has "
            + (
                "no temporal shift"
                if not shifts
                else "the offline (bi-directional) shift, which looks at the next frame"
            )
        )
    return shifts


class OnlineFrameNet(nn.Module):
    """A frame model with online shifts (a copy of ``model``, eval mode) run on one frame per
    stream: ``forward(frame, *buffers)`` with uint8 ``frame (N, H, W, 3)`` and one buffer per
    shift (``None`` or zeros for a stream's first frame) -> ``(logits (N, K), *buffers)``. The
    frame is normalised as in training (:func:`~seqctx.video.data.transforms.normalization`)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        model = copy.deepcopy(model).eval()
        online_shifts(model)  # refuses a model without online shifts
        self.steps = nn.ModuleList()
        for parent in list(model.modules()):  # each shift becomes a step in place, in forward order
            for name, child in parent.named_children():
                if isinstance(child, TemporalShift):
                    self.steps.append(_ShiftStep(child.fold_div))
                    setattr(parent, name, self.steps[-1])
        self.trunk, self.head = model.trunk, model.head
        scale, offset = normalization(2)  # (3, 1, 1): over (N, 3, H, W)
        self.register_buffer("scale", scale, persistent=False)
        self.register_buffer("offset", offset, persistent=False)
        self.eval()

    def forward(self, frame: Tensor, *buffers: Tensor | None) -> tuple[Tensor, ...]:
        for step, buffer in zip(self.steps, buffers or [None] * len(self.steps), strict=True):
            step.incoming = buffer
        x = frame.permute(0, 3, 1, 2).contiguous().float() * self.scale - self.offset  # (N, 3, H, W)
        logits = self.head(self.trunk(x))  # (N, K)
        out = tuple(step.outgoing for step in self.steps)
        for step in self.steps:
            step.incoming = step.outgoing = None
        return (logits, *out)

    @torch.no_grad()
    def initial_buffers(self, batch: int, height: int, width: int) -> list[Tensor]:
        """Zeros of each buffer's shape for ``batch`` streams of ``height x width`` frames: what
        a stream starts from."""
        out = self(torch.zeros(batch, height, width, 3, dtype=torch.uint8))
        return [torch.zeros_like(b) for b in out[1:]]


class StreamingRecognizer:
    """Frame-by-frame recognition of one stream: :meth:`step` takes a uint8 ``(H, W, 3)`` frame
    (already at the model's input size) and returns that frame's logits ``(K,)`` and the smoothed
    scores ``(K,)`` (softmax averaged over the last ``smoothing`` frames); :meth:`reset` starts a
    new stream. ``model``: an online TSM (PyTorch), or an :class:`~.onnx.OnnxFrameNet` (onnxruntime)."""

    def __init__(self, model: nn.Module | Any, smoothing: int = 8) -> None:
        if smoothing < 1:
            raise ValueError(f"smoothing is a number of frames >= 1, got {smoothing}")
        self.net = OnlineFrameNet(model) if isinstance(model, nn.Module) else model
        self.smoothing = smoothing
        self.reset()

    def reset(self) -> None:
        """Forget the stream: the next frame is a first frame (zero buffers, no history)."""
        self.buffers: list[Tensor] | None = None
        self.history: deque[Tensor] = deque(maxlen=self.smoothing)

    @torch.no_grad()
    def step(self, frame: Tensor) -> tuple[Tensor, Tensor]:
        if frame.dim() != 3 or frame.shape[-1] != 3 or frame.dtype != torch.uint8:
            raise ValueError(f"a frame is uint8 (H, W, 3), got {tuple(frame.shape)} {frame.dtype}")
        if self.buffers is None:
            self.buffers = self.net.initial_buffers(1, frame.shape[0], frame.shape[1])
        logits, *self.buffers = self.net(frame.unsqueeze(0), *self.buffers)
        self.history.append(logits[0].softmax(-1))
        return logits[0], torch.stack(tuple(self.history)).mean(0)
