"""The deployed form of a recognizer: what a decoder gives in, logits out."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seqctx.video.data.transforms import normalization

INPUT_LAYOUT = "uint8 (N, T, H, W, 3): RGB frames 0-255 as a decoder gives them; N is dynamic"


class ClipRecognizer(nn.Module):
    """``model`` (eval mode) behind the input normalisation: uint8 clips ``(N, T, H, W, 3)`` ->
    ``(N, 3, T, H, W)``, ``x * (1 / (255 std)) - mean / std`` with ImageNet's statistics, the
    same float32 constants (:func:`~seqctx.video.data.transforms.normalization`) and operations as
    training's :func:`~seqctx.video.data.normalize_clips`
    (out of place here: what an exported graph holds) -> logits ``(N, K)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval()
        scale, shift = normalization(3)  # (3, 1, 1, 1): over (N, 3, T, H, W)
        self.register_buffer("scale", scale, persistent=False)
        self.register_buffer("shift", shift, persistent=False)

    def forward(self, clips: Tensor) -> Tensor:
        x = clips.permute(0, 4, 1, 2, 3).contiguous().float()  # (N, 3, T, H, W), laid out as training's
        return self.model(x * self.scale - self.shift)


def example_clips(batch: int, frames: int, size: int, seed: int = 0) -> Tensor:
    """Random uint8 clips ``(batch, frames, size, size, 3)``."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, frames, size, size, 3), dtype=torch.uint8, generator=g)
