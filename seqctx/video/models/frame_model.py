"""Frame models: a 2D trunk applied to every frame, then segmental consensus (TSN; with temporal
shift, TSM). The plain image ResNet is the same model with one frame per sample."""

from __future__ import annotations

from torch import Tensor, nn

from .heads import ClassificationHead
from .resnet import ResNetTrunk


class FrameModel(nn.Module):
    """``(N, 3, T, H, W)`` clips (or ``(N, 3, H, W)`` images) -> ``(N, num_classes)`` logits.

    Frames are folded into the batch, ``(N*T, 3, H, W)``, run through the 2D trunk and the head,
    and the frame logits are averaged: TSN's segmental consensus (Wang et al., ECCV 2016). When the
    trunk holds TSM shifts or CGC layers with a per-video context, ``T`` must equal the
    ``num_segments`` the model was built with.
    """

    def __init__(self, trunk: ResNetTrunk, head: ClassificationHead, num_segments: int | None) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = head
        self.num_segments = num_segments

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 4:
            x = x.unsqueeze(2)  # an image is a one-frame clip
        n, c, t = x.shape[:3]
        if self.num_segments is not None and t != self.num_segments:
            raise ValueError(f"this model was built for num_segments={self.num_segments}, got clips of {t} frames")
        frames = x.transpose(1, 2).reshape(n * t, c, *x.shape[3:])  # (N*T, 3, H, W)
        logits = self.head(self.trunk(frames))  # (N*T, K)
        return logits.view(n, t, -1).mean(1)
