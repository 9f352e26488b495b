"""Decoder backends, one module each, behind one registry (:data:`REGISTRY`, filled by
:func:`register_backend`): a backend is a :class:`VideoSource` subclass in a file of its own,
imported here. ``auto`` (:data:`AUTO_ORDER`) is resolved by :func:`seqctx.video.data.decode.open_video`."""

from . import decord, frames, pyav, torchcodec  # noqa: F401  (each registers its backend)
from .base import REGISTRY, BackendUnavailable, VideoError, VideoSource, scaled_size, why_unavailable
from .frames import check_frame_template, frame_template

# `auto` tries these, installed ones only, in this order, and reads a video with the first that
# opens it (README, "Decoders", measured by scripts/bench_loader.py --tables backends): PyAV first,
# on every platform (it bundles FFmpeg and is a dependency of seqctx), so one config reads the same
# pixels on a laptop, an x86_64 and an aarch64 cluster; at or above decord's speed on 9 of 10 clip
# types here (geometric mean 1.07x) and free of decord's hangs. Then decord (x86_64), torchcodec.
AUTO_ORDER: tuple[str, ...] = ("pyav", "decord", "torchcodec")

__all__ = [
    "AUTO_ORDER",
    "REGISTRY",
    "BackendUnavailable",
    "VideoError",
    "VideoSource",
    "check_frame_template",
    "frame_template",
    "scaled_size",
    "why_unavailable",
]
