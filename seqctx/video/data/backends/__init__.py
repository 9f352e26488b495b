"""Decoder backends, one module each, behind one registry (:data:`REGISTRY`, filled by
:func:`register_backend`): a backend is a :class:`VideoSource` subclass in a file of its own,
imported here. ``auto`` (:data:`AUTO_ORDER`) is resolved by :func:`seqctx.video.data.decode.open_video`."""

from . import decord, frames, pyav, torchcodec  # noqa: F401  (each registers its backend)
from .base import REGISTRY, BackendUnavailable, VideoError, VideoSource, scaled_size, why_unavailable
from .frames import check_frame_template, frame_template

# `auto` tries these, installed ones only, in this order, and reads a video with the first that
# opens it (README, "Decoders", measured by scripts/bench_loader.py --tables backends): decord
# where it installs (the decoder of the official TSM/mmaction2 pipelines, so the same pixels, and
# the fastest on dense clips); then PyAV (bundled with FFmpeg on every platform; faster than
# torchcodec on 4 of the 6 clip types); torchcodec last.
AUTO_ORDER: tuple[str, ...] = ("decord", "pyav", "torchcodec")

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
