"""What every decoder backend is: a :class:`VideoSource` (open, frame count, frame-exact read of
sorted indices at a short side, in displayed orientation), registered by name with
:func:`register_backend`, and the helpers they share.

**Frame-exact.** Frame ``i`` is the ``i``-th frame a sequential decode of the file gives (every
frame decoded in order). Where timestamps cannot name frames (AVI stores decode order only), a
backend decodes forward from the start instead of seeking: :attr:`VideoSource.access` is
``"sequential"`` and ``seqctx data check`` counts such videos.

**Decoding at the size used.** ``short_side=S`` gives frames with their shorter side ``S`` and the
longer one ``round(long * S / short)`` rounded to the nearest even number (as FFmpeg's
``scale=-2``; :func:`scaled_size`), aspect kept, in displayed orientation; frames no larger than
that keep their size (never upscaled). A 1080p frame is
27 MB of RGB, at ``S = 256`` 0.35 MB.
"""

from __future__ import annotations

import functools
import importlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch

from seqctx.errors import UserError

Access = Literal["seek", "sequential"]


class VideoError(UserError, RuntimeError):
    """A video that cannot be opened or decoded; the message names the file and the reason."""


class BackendUnavailable(UserError):
    """A backend named by the user that this machine cannot run; the message says how to install it."""


@dataclass(frozen=True, repr=False)
class Blob:
    """A video held in memory (a sample read from a shard): ``name`` says where it came from in
    messages (``shard.tar#key``), ``data`` is the encoded file. Every video backend reads one."""

    name: str
    data: bytes

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"Blob({self.name!r}, {len(self.data)} bytes)"


Media = str | Path | Blob  # what a video backend opens: a file's path or a video in memory


def media_input(path: Media) -> str | io.BytesIO:
    """What a decoder library opens for ``path``: the path as text, or a fresh stream over a
    :class:`Blob`'s bytes (decord, PyAV and torchcodec all read file-like objects)."""
    return io.BytesIO(path.data) if isinstance(path, Blob) else str(path)


def head(path: Media, size: int) -> bytes:
    """The first ``size`` bytes of a file or a :class:`Blob`."""
    if isinstance(path, Blob):
        return path.data[:size]
    with open(path, "rb") as f:
        return f.read(size)


def scaled_size(height: int, width: int, short_side: int | None) -> tuple[int, int]:
    """``(height, width)`` with the shorter side ``short_side`` and the longer one
    ``round(long * short_side / short)`` to the nearest even number (at least 2); unchanged for
    ``None`` and for frames whose shorter side is not larger than ``short_side``: a decoder never
    upscales (an upscale adds no detail, and in decord's and torchcodec's decoders it cost up to
    1.5x the decoding of Something-Something's 240p clips; the clip transform's resize does it)."""
    if short_side is None or min(height, width) <= short_side:
        return height, width
    short, long = min(height, width), max(height, width)
    scaled = max(2, 2 * round(long * short_side / short / 2))
    return (short_side, scaled) if height <= width else (scaled, short_side)


def seeks_exactly(container: str) -> bool:
    """Whether presentation timestamps name the frames of ``container`` (FFmpeg's format names,
    comma-separated): not AVI, which stores decode order only (B-frames come back as neighbours)."""
    return "avi" not in container.split(",")


def is_avi(path: Media) -> bool:
    """Whether ``path`` is an AVI file (a RIFF header of form ``AVI``), read from its first 12
    bytes: for decoders that do not name the container."""
    start = head(path, 12)
    return start[:4] == b"RIFF" and start[8:12] in (b"AVI ", b"AVIX")


def gather(unique: list[int], frames: torch.Tensor, indices: Sequence[int]) -> torch.Tensor:
    """Frames decoded once for ``unique`` (sorted) -> the requested order, repeats included
    (``index_select``: advanced indexing of a uint8 clip cost as much as a quarter of its decoding)."""
    if len(indices) == len(unique) and all(a == b for a, b in zip(indices, unique, strict=True)):
        return frames  # already in order (dense clips)
    pos = {idx: i for i, idx in enumerate(unique)}
    return frames.index_select(0, torch.tensor([pos[i] for i in indices]))


def resize_frames(frames: torch.Tensor, short_side: int | None) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` resized (antialiased bilinear) to :func:`scaled_size`."""
    height, width = scaled_size(frames.shape[1], frames.shape[2], short_side)
    if (height, width) == tuple(frames.shape[1:3]):
        return frames
    from torchvision.transforms.v2 import functional as TF

    return TF.resize(frames.permute(0, 3, 1, 2), [height, width], antialias=True).permute(0, 2, 3, 1).contiguous()


def rotate(rgb: np.ndarray, degrees: int) -> np.ndarray:
    """Turn ``(H, W, 3)`` (or ``(N, H, W, 3)``) frames ``degrees`` counter-clockwise (a multiple of 90)."""
    quarter = round(degrees / 90) % 4
    return np.rot90(rgb, quarter, axes=(-3, -2)) if quarter else rgb


class VideoSource:
    """An opened video: :attr:`num_frames`, :attr:`access` and :meth:`decode` of sorted unique
    frame indices; :meth:`read` any indices.

    A backend is a subclass registered with :func:`register_backend`: its ``__init__(path,
    num_threads, short_side, **options)`` opens the video (a path, or a :class:`Blob` in memory
    for a video decoder: :func:`media_input`) (a :class:`VideoError` naming the file
    when it cannot) and :meth:`decode` returns uint8 ``(U, H, W, 3)`` frames at the short side in
    displayed orientation. Class attributes say what it needs: :attr:`requires` (the module whose
    import proves it can run) and :attr:`install` (how to get it)."""

    name: ClassVar[str] = ""
    requires: ClassVar[str] = ""  # a module name; "" needs nothing beyond seqctx's own dependencies
    install: ClassVar[str] = ""

    path: Media
    num_frames: int
    access: Access = "seek"

    def decode(self, unique: list[int]) -> torch.Tensor:
        """uint8 ``(len(unique), H, W, 3)`` for sorted, unique, valid indices."""
        raise NotImplementedError

    def unique(self, indices: Sequence[int]) -> list[int]:
        """``indices`` sorted without repeats; a :class:`VideoError` for one out of range."""
        if len(indices) == 0:
            raise ValueError("read_frames needs at least one index")
        bad = [i for i in indices if not 0 <= i < self.num_frames]
        if bad:
            raise VideoError(f"{self.path}: frame indices {bad[:5]} out of range for {self.num_frames} frames")
        return sorted(set(int(i) for i in indices))

    def read(self, indices: Sequence[int]) -> torch.Tensor:
        """The frames at ``indices`` (any order, repeats allowed): uint8 ``(T, H, W, 3)``."""
        unique = self.unique(indices)
        return gather(unique, self.decode(unique), indices)

    def read_sequentially(self, indices: Sequence[int]) -> torch.Tensor:
        """The frames at ``indices`` as a sequential decode from the first frame gives them (no
        seeking): the ground truth :meth:`read` is compared with (``seqctx data check --exact``)."""
        self.access = "sequential"
        return self.read(indices)


REGISTRY: dict[str, type[VideoSource]] = {}


def register_backend(cls: type[VideoSource]) -> type[VideoSource]:
    """Class decorator: make ``cls`` the backend called ``cls.name``."""
    if cls.name in REGISTRY or cls.name in ("", "auto"):
        raise ValueError(f"backend name {cls.name!r} is taken or reserved")
    REGISTRY[cls.name] = cls
    return cls


@functools.cache
def why_unavailable(name: str) -> str | None:
    """``None`` when backend ``name`` can run on this machine, else the reason and how to install
    it (its required module is imported once per process to find out: torchcodec's import fails
    when the system's FFmpeg libraries are missing, which a lookup of the package would not show)."""
    cls = REGISTRY[name]
    if not cls.requires:
        return None
    try:
        importlib.import_module(cls.requires)
    except Exception as e:  # ImportError, or torchcodec's RuntimeError for missing FFmpeg libraries
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return f"{reason[:200]}; {cls.install}"
    return None
