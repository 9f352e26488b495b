"""3D models: a 3D trunk over the whole clip, then one head (I3D, P3D)."""

from __future__ import annotations

from torch import Tensor, nn

from .heads import ClassificationHead
from .resnet import ResNetTrunk


class ClipModel(nn.Module):
    """``(N, 3, T, H, W)`` clips -> ``(N, num_classes)``: 3D trunk, pool over (T, H, W), fc."""

    def __init__(self, trunk: ResNetTrunk, head: ClassificationHead) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 5:
            raise ValueError(f"3D models take (N, 3, T, H, W) clips, got shape {tuple(x.shape)}")
        return self.head(self.trunk(x))
