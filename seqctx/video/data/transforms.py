"""Clip transforms: one random draw per clip, the same crop for every frame.

Input: uint8 ``(T, H, W, C)`` (as decoded) or ``(T, C, H, W)``. Output of the built pipelines:
uint8 views ``(V, 3, T, H, W)``, ``V = 1`` but for multi-crop testing; :func:`normalize_clips`
turns a batch into float ImageNet statistics on the device the model runs on (a float clip is
4x the bytes to move between DataLoader workers and the main process, and converting it there
cost more than decoding a dense clip). Geometric steps use ``torchvision.transforms.v2`` on the
``(T, C, H, W)`` clip, which it treats as a batch sharing one set of random parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_tchw(clip: Tensor) -> Tensor:
    """``(T, H, W, C) -> (T, C, H, W)``; a ``(T, C, H, W)`` clip (C of 1 or 3) passes through."""
    if clip.dim() != 4:
        raise ValueError(f"a clip must be 4-D (T, H, W, C) or (T, C, H, W), got shape {tuple(clip.shape)}")
    if clip.shape[1] in (1, 3) and clip.shape[-1] not in (1, 3):
        return clip
    return clip.permute(0, 3, 1, 2)


class MultiScaleCrop:
    """TSN's multi-scale crop (Wang et al., ECCV 2016, sec. 3.2): the crop's width and height are
    each ``scale * min(H, W)`` for scales in ``scales``, at most ``max_distort`` steps apart; its
    position is one of the fixed corners/centre (13 with ``more_fix_crop``); then resize to ``size``."""

    def __init__(
        self,
        size: int,
        scales: Sequence[float] = (1.0, 0.875, 0.75, 0.66),
        max_distort: int = 1,
        more_fix_crop: bool = True,
    ) -> None:
        self.size, self.scales, self.max_distort, self.more_fix_crop = size, tuple(scales), max_distort, more_fix_crop

    def _offsets(self, w: int, h: int, cw: int, ch: int) -> list[tuple[int, int]]:
        sw, sh = (w - cw) // 4, (h - ch) // 4
        pos = [(0, 0), (4, 0), (0, 4), (4, 4), (2, 2)]
        if self.more_fix_crop:
            pos += [(0, 2), (4, 2), (2, 4), (2, 0), (1, 1), (3, 1), (1, 3), (3, 3)]
        return [(sw * x, sh * y) for x, y in pos]

    def __call__(self, clip: Tensor) -> Tensor:
        h, w = clip.shape[-2:]
        base = min(h, w)
        sizes = [int(base * s) for s in self.scales]
        sizes = [self.size if abs(s - self.size) < 3 else s for s in sizes]
        pairs = [(cw, ch) for i, ch in enumerate(sizes) for j, cw in enumerate(sizes) if abs(i - j) <= self.max_distort]
        cw, ch = pairs[int(torch.randint(len(pairs), ()))]  # torch's RNG: seeded per DataLoader worker
        offsets = self._offsets(w, h, cw, ch)
        x, y = offsets[int(torch.randint(len(offsets), ()))]
        clip = TF.crop(clip, y, x, ch, cw)
        return TF.resize(clip, [self.size, self.size], antialias=True)


class ScaleJitterCrop:
    """The Non-local / I3D training crop on Kinetics (Wang et al., CVPR 2018, sec. 5.1; after
    VGG's scale jittering): the short side resized to a random ``scale`` in ``scale_range``
    (integers, inclusive), then a random ``size x size`` crop and (separately) a flip. Done as one
    crop of the decoded frames and one resize: the region is ``size * short / scale`` source pixels
    wide, at a random position, resized to ``size``."""

    def __init__(self, size: int, scale_range: Sequence[int] = (256, 320)) -> None:
        low, high = scale_range
        if not size <= low <= high:
            raise ValueError(f"scale_range must be [low, high] with size ({size}) <= low <= high; got {[low, high]}")
        self.size, self.low, self.high = size, low, high

    def draw(self, h: int, w: int) -> tuple[int, int, int, int]:
        """``(scale, top, left, region)`` for frames of ``h x w``: the chosen short side, and the
        square of source pixels that becomes the crop."""
        scale = int(torch.randint(self.low, self.high + 1, ()))
        region = max(1, min(h, w, round(self.size * min(h, w) / scale)))
        top = int(torch.randint(h - region + 1, ()))
        left = int(torch.randint(w - region + 1, ()))
        return scale, top, left, region

    def __call__(self, clip: Tensor) -> Tensor:
        _, top, left, region = self.draw(*clip.shape[-2:])
        return TF.resize(TF.crop(clip, top, left, region, region), [self.size, self.size], antialias=True)


class ThreeCrop:
    """Three ``size x size`` crops along the longer side (start, centre, end): TSM's and the
    Non-local test protocol. Returns ``(3, T, C, size, size)``."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, clip: Tensor) -> Tensor:
        h, w = clip.shape[-2:]
        s = self.size
        if min(h, w) < s:
            raise ValueError(f"ThreeCrop({s}) needs frames of at least {s}x{s}, got {h}x{w}")
        if w >= h:
            tops_lefts = [((h - s) // 2, x) for x in (0, (w - s) // 2, w - s)]
        else:
            tops_lefts = [(y, (w - s) // 2) for y in (0, (h - s) // 2, h - s)]
        return torch.stack([TF.crop(clip, y, x, s, s) for y, x in tops_lefts])


class TenCrop:
    """The four corners and the centre, and their horizontal flips: ``(10, T, C, size, size)``."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, clip: Tensor) -> Tensor:
        return torch.stack(TF.ten_crop(clip, [self.size, self.size]))


def one_crop(clip: Tensor) -> Tensor:
    """``(T, C, H, W)`` -> ``(1, T, C, H, W)``: a single crop as the crops axis the pipelines end with."""
    return clip.unsqueeze(0)


def to_views(crops: Tensor) -> Tensor:
    """uint8 crops ``(V, T, C, H, W)`` -> uint8 views ``(V, C, T, H, W)``, contiguous: the
    pipelines' output. The crops come with their pixels' channels side by side (as decoded);
    NumPy's copy to planes took a third of the time of torch's (1.6 vs 4.5 ms for 32 frames of
    224 x 224)."""
    if crops.device.type != "cpu":
        return crops.transpose(1, 2).contiguous()
    return torch.from_numpy(np.ascontiguousarray(crops.numpy().transpose(0, 2, 1, 3, 4)))


def fold_views(clips: Tensor, device: torch.device) -> tuple[Tensor, int]:
    """A loader batch of uint8 views ``(B, V, C, T, H, W)`` -> the model's input, float
    ``(B*V, C, T, H, W)`` on ``device`` (:func:`normalize_clips`), and ``V``."""
    return normalize_clips(clips.flatten(0, 1).to(device, non_blocking=True)), clips.shape[1]


def normalize_clips(
    clips: Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> Tensor:
    """uint8 clips ``(..., C, T, H, W)`` (a batch from the loader, on any device) -> float32
    ``(x / 255 - mean) / std`` per channel, computed as ``x * (1 / (255 std)) - mean / std``."""
    scale, shift = normalization(3, mean, std)
    out = torch.empty(clips.shape, dtype=torch.float32, device=clips.device).copy_(clips)
    return out.mul_(scale.to(clips.device)).sub_(shift.to(clips.device))


def normalization(
    trailing: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> tuple[Tensor, Tensor]:
    """``(scale, shift)`` of :func:`normalize_clips`, ``1 / (255 std)`` and ``mean / std``,
    computed in float64 and stored as float32, shaped ``(C,) + (1,) * trailing`` to broadcast over
    the channel axis of ``(..., C, *trailing dims)`` (the constants exported graphs hold)."""
    std_t = torch.tensor(std, dtype=torch.float64)
    shape = (-1,) + (1,) * trailing
    return (1.0 / (255.0 * std_t)).float().view(shape), (torch.tensor(mean, dtype=torch.float64) / std_t).float().view(
        shape
    )


def build_transform(
    train: bool,
    size: int = 224,
    scale_size: int | None = None,
    crop: str = "multiscale",
    flip: bool = True,
    test_crops: int = 1,
    scale_range: Sequence[int] = (256, 320),
    color_jitter: float | None = None,
    randaugment: Sequence[int] | None = None,
) -> Callable[[Tensor], Tensor]:
    """The standard clip pipelines.

    Train: ``crop`` = ``"multiscale"`` (TSN/TSM's corner crops at scales of the short side,
    resized to ``size``), ``"scale_jitter"`` (:class:`ScaleJitterCrop` over ``scale_range``: the
    Non-local / I3D Kinetics recipe) or ``"random_resized"`` (Inception-style), a horizontal
    flip if ``flip`` (keep it off for Something-Something, where left and right are labels, or
    let the data set swap those labels), then ``color_jitter`` (brightness, contrast and
    saturation by up to that factor, hue unchanged) and ``randaugment`` (``[num_ops,
    magnitude]``, torchvision's RandAugment), each drawn once per clip and applied to every frame
    alike -> uint8 ``(1, 3, T, size, size)``.

    Test: resize the short side to ``scale_size`` (default ``size * 256 // 224``), then a
    centre crop of ``size``
    (``test_crops=1``), three crops along the long side covering it at ``scale_size``
    (``3``), or ten crops (``10``) -> uint8 ``(test_crops, 3, T, size, size)``.
    """
    scale_size = scale_size or size * 256 // 224
    steps: list[Callable[[Tensor], Tensor]] = [to_tchw]
    if train:
        if crop == "multiscale":
            # Crop sizes are fractions of the short side, so cropping the decoded frames and
            # resizing once equals TSN's resize-to-scale_size-then-crop, at the cost of one resize.
            steps.append(MultiScaleCrop(size))
        elif crop == "scale_jitter":
            steps.append(ScaleJitterCrop(size, scale_range))
        elif crop == "random_resized":
            steps += [v2.RandomResizedCrop(size, antialias=True)]
        else:
            raise ValueError(f"crop must be 'multiscale', 'scale_jitter' or 'random_resized', got {crop!r}")
        if flip:
            steps.append(v2.RandomHorizontalFlip())
        if color_jitter:
            steps.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
        if randaugment:
            num_ops, magnitude = randaugment
            steps.append(v2.RandAugment(num_ops=num_ops, magnitude=magnitude))
        steps.append(one_crop)
    else:
        steps.append(v2.Resize(scale_size, antialias=True))
        if test_crops == 1:
            steps += [v2.CenterCrop(size), one_crop]
        elif test_crops == 3:
            steps.append(ThreeCrop(size))
        elif test_crops == 10:
            steps.append(TenCrop(size))
        else:
            raise ValueError(f"test_crops must be 1, 3 or 10, got {test_crops}")
    steps.append(to_views)
    return v2.Compose(steps)
