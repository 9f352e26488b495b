"""torchcodec: PyTorch's own decoder, over the system's FFmpeg libraries (every platform PyTorch
runs on; Debian: ``apt-get install ffmpeg``)."""

from __future__ import annotations

import re
from typing import Any

import torch

from .base import Blob, Media, VideoError, VideoSource, is_avi, register_backend, scaled_size


def _reason(error: Exception, path: Media) -> str:
    """torchcodec's message without its C++ source location and the file's path."""
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return _SOURCE.sub("", text).replace(f": {path}", "").replace(str(path), "it").strip()


_SOURCE = re.compile(r"^\w+, \S+\.cpp:\d+, ")  # "Demuxer, /__w/.../Demuxer.cpp:93, "


@register_backend
class TorchCodecSource(VideoSource):
    """torchcodec's ``VideoDecoder`` in its exact seek mode (opening scans the file's packets, so
    that frame ``i`` is the ``i``-th of a sequential decode; AVI, whose timestamps are decode
    order, it refuses: measured, its seeks land up to two frames off there, and its decoding from
    the first frame ends early), in displayed orientation (it applies
    the stream's display matrix), resized to ``short_side`` in the decoder (its ``Resize``
    transform: antialiased bilinear, before the RGB frame is copied out). The header is read
    first (no decoding) for the displayed size."""

    name = "torchcodec"
    requires = "torchcodec.decoders"
    install = (
        "pip install torchcodec (its version must match torch's: see torchcodec's compatibility table), and the "
        "system's FFmpeg libraries (Debian/Ubuntu: apt-get install ffmpeg; macOS: brew install ffmpeg)"
    )

    def __init__(self, path: Media, num_threads: int = 1, short_side: int | None = None) -> None:
        from torchcodec.decoders import VideoDecoder, get_container_metadata
        from torchcodec.transforms import Resize

        self.path = path
        if is_avi(path):
            raise VideoError(
                f"{path}: torchcodec cannot read AVI frame-exactly (measured: its seeks land up to two frames off "
                "and a read from the first frame ends early); read it with pyav or decord, or `seqctx data prepare` it"
            )
        source = path.data if isinstance(path, Blob) else str(path)
        try:
            header = get_container_metadata(source)
            if header.best_video_stream_index is None:
                raise VideoError(f"{path}: the file has no video stream")
            stream = header.streams[header.best_video_stream_index]
            height, width = stream.height, stream.width  # as coded: Resize acts before the turn to display
            size = scaled_size(height, width, short_side)
            transforms = [Resize(size)] if size != (height, width) else None
            self.decoder: Any = VideoDecoder(
                source, dimension_order="NHWC", num_ffmpeg_threads=num_threads, seek_mode="exact",
                transforms=transforms,
            )  # fmt: skip
        except VideoError:
            raise
        except Exception as e:
            raise VideoError(f"{path}: torchcodec cannot open it: {_reason(e, path)}") from e
        self.num_frames = int(self.decoder.metadata.num_frames or 0)
        if self.num_frames == 0:
            raise VideoError(f"{path}: the video stream has no frames")

    def decode(self, unique: list[int]) -> torch.Tensor:
        try:
            if self.access == "seek":
                return self.decoder.get_frames_at(unique).data
            run = self.decoder.get_frames_in_range(0, unique[-1] + 1).data  # decoded in order from the first
            return run.index_select(0, torch.tensor(unique))
        except Exception as e:
            raise VideoError(
                f"{self.path}: torchcodec failed to decode frames {unique[:5]}...: {_reason(e, self.path)}"
            ) from e
