"""Mixup and CutMix on batches of clips, with soft targets (``train.mixup``, ``train.cutmix``).

Mixup (Zhang et al., ICLR 2018): ``x = lam * x_i + (1 - lam) * x_j``, ``y = lam * y_i + (1 - lam) * y_j``,
``lam ~ Beta(alpha, alpha)``. CutMix (Yun et al., ICCV 2019, eq. 1-2): a box of area ``(1 - lam) H W``
from ``x_j`` pasted into ``x_i`` (the same box in every frame of a clip), ``lam`` then set to the
area kept. The partner ``j`` of item ``i`` is the batch reversed (timm's pairing); with both on,
each batch takes one of the two with probability 1/2. Random draws use torch's global RNG (its
state is in every checkpoint: a resumed run mixes the same way).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


class MixupCutmix:
    """``(clips (N, C, T, H, W), labels (N,)) -> (mixed clips, targets (N, num_classes))``; the
    targets of each row sum to 1 (label smoothing is the loss's, applied to them)."""

    def __init__(self, num_classes: int, mixup_alpha: float | None = None, cutmix_alpha: float | None = None) -> None:
        if not (mixup_alpha or cutmix_alpha):
            raise ValueError("MixupCutmix needs mixup_alpha or cutmix_alpha > 0")
        self.num_classes, self.mixup_alpha, self.cutmix_alpha = num_classes, mixup_alpha, cutmix_alpha

    def _beta(self, alpha: float) -> float:
        return float(torch.distributions.Beta(alpha, alpha).sample())

    def box(self, lam: float, h: int, w: int) -> tuple[int, int, int, int]:
        """``(top, bottom, left, right)`` of CutMix's box for ``lam``: sides ``sqrt(1 - lam)`` of
        the frame's, centred at a uniform point, clipped to the frame."""
        ratio = (1.0 - lam) ** 0.5
        cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
        bh, bw = int(h * ratio), int(w * ratio)
        return max(cy - bh // 2, 0), min(cy + bh // 2, h), max(cx - bw // 2, 0), min(cx + bw // 2, w)

    def __call__(self, clips: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        use_cutmix = bool(self.cutmix_alpha) and (not self.mixup_alpha or bool(torch.rand(()) < 0.5))
        lam = self._beta(self.cutmix_alpha if use_cutmix else self.mixup_alpha)  # type: ignore[arg-type]
        partner = clips.flip(0)
        if use_cutmix:
            h, w = clips.shape[-2:]
            top, bottom, left, right = self.box(lam, h, w)
            clips = clips.clone()
            clips[..., top:bottom, left:right] = partner[..., top:bottom, left:right]
            lam = 1.0 - (bottom - top) * (right - left) / (h * w)
        else:
            clips = clips.mul(lam).add_(partner, alpha=1.0 - lam)
        onehot = F.one_hot(labels, self.num_classes).to(clips.dtype)
        return clips, onehot.mul(lam).add_(onehot.flip(0), alpha=1.0 - lam)
