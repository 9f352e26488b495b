"""decord's ``VideoReader`` (``get_batch``): the fastest reader on x86_64 Linux, where its wheels
exist; unmaintained since 2022, with no wheels for aarch64 Linux or Apple Silicon."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .base import (
    Media,
    VideoError,
    VideoSource,
    media_input,
    register_backend,
    resize_frames,
    scaled_size,
    seeks_exactly,
)
from .headers import VideoTrack, video_track
from .native import native_reason, native_stderr


def _tensor(frames: Any) -> torch.Tensor:
    """A decord result as a uint8 tensor, whatever bridge another library set process-wide
    (``decord.bridge.set_bridge("torch")``, as pytorchvideo does, makes decord return tensors):
    decord's own arrays are taken over through DLPack without a copy (``asnumpy`` copied every
    decoded frame once more); MXNet's and TensorFlow's through NumPy."""
    if isinstance(frames, torch.Tensor):
        return frames
    if hasattr(frames, "to_dlpack"):
        return torch.utils.dlpack.from_dlpack(frames.to_dlpack())
    return torch.from_numpy(frames.asnumpy() if hasattr(frames, "asnumpy") else np.asarray(frames.numpy()))


def _track(path: Media) -> VideoTrack:
    """The video track's codec, coded size and rotation: from the container's header where it
    names them (MP4/MOV, Matroska/WebM: :func:`~.headers.video_track`), else from FFmpeg through
    PyAV (AVI and the rest: the display rotation is then 0, as decord's is there)."""
    track = video_track(path)
    if track is not None:
        return track
    import av

    try:
        with av.open(media_input(path), metadata_errors="ignore") as container:
            codec = container.streams.video[0].codec_context
            return VideoTrack(codec.name, codec.width, codec.height, 0, container.format.name)
    except Exception as e:  # av.error.FFmpegError: strerror is the reason in words
        raise VideoError(f"{path}: decord cannot open it: {getattr(e, 'strerror', None) or e}") from e


@register_backend
class DecordSource(VideoSource):
    """decord's ``VideoReader``; with ``short_side`` it resizes in its decoder. Two decord 0.6
    faults are avoided: a resized video turned by 90 or 270 degrees comes back garbled (such a
    video is decoded at full size, then resized), and ``seek``/``skip_frames`` land on wrong
    frames where seeking is inexact (AVI, and MPEG-4 Part 2 (XviD/DivX, packed B-frames) in any
    container, both measured against sequential decoding): there, frames are read with ``next``
    from a fresh reader."""

    name = "decord"
    requires = "decord"
    install = "pip install decord==0.6.0 (wheels exist for Linux x86_64, macOS x86_64 and Windows only)"

    def __init__(self, path: Media, num_threads: int = 1, short_side: int | None = None) -> None:
        self.path, self.short_side = path, short_side
        track = _track(path)
        self.access = "seek" if seeks_exactly(track.container) and track.codec != "mpeg4" else "sequential"
        height, width = scaled_size(track.height, track.width, short_side)
        resize = (height, width) != (track.height, track.width)
        self.resize_after = resize and track.rotation in (90, 270)
        resize_in_decoder = resize and not self.resize_after
        self.options = {"num_threads": num_threads} | ({"width": width, "height": height} if resize_in_decoder else {})
        self.reader = self._open()
        self.num_frames = len(self.reader)
        self.used = False  # a sequential read needs a fresh reader

    def _open(self) -> Any:
        import decord

        try:
            with native_stderr() as logged:
                return decord.VideoReader(media_input(self.path), **self.options)
        except Exception as e:  # decord raises its own DECORDError and RuntimeErrors
            reason = native_reason([*logged, *str(e).splitlines()[:1]], type(e).__name__)
            raise VideoError(f"{self.path}: decord cannot open it: {reason}") from e

    def decode(self, unique: list[int]) -> torch.Tensor:
        try:
            if self.access == "seek":
                frames = _tensor(self.reader.get_batch(unique))  # (U, H, W, 3) uint8
            else:
                reader = self._open() if self.used else self.reader
                wanted, kept = set(unique), []
                for i in range(unique[-1] + 1):
                    frame = reader.next()
                    if i in wanted:
                        kept.append(_tensor(frame))
                frames = torch.stack(kept)
            self.used = True
        except Exception as e:
            raise VideoError(f"{self.path}: decord failed to decode frames {unique[:5]}...: {e}") from e
        return resize_frames(frames, self.short_side) if self.resize_after else frames
