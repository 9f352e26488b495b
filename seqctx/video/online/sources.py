"""What ``seqctx predict --stream SOURCE`` reads, one frame at a time, in order: a video file, a
folder of frames, or a live source FFmpeg opens (a camera such as ``/dev/video0``, an
``rtsp://``/``http://`` URL), through PyAV; each frame brought to the model's input as evaluation
brings a clip's (the short side to ``scale_size``, the centre ``size`` x ``size`` crop)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqctx.errors import DataError
from seqctx.video.data.backends.base import rotate
from seqctx.video.data.backends.frames import FrameFolderSource
from seqctx.video.data.transforms import build_transform

log = logging.getLogger(__name__)
LIVE_PREFIXES = ("/dev/video",)  # Linux cameras: FFmpeg's v4l2 input


def _pyav_frames(source: str) -> Iterator[np.ndarray]:
    """Every frame of ``source`` in decoding order as RGB ``(H, W, 3)``, displayed orientation."""
    import av

    live = source.startswith(LIVE_PREFIXES)
    try:
        container = av.open(source, format="v4l2" if live else None, metadata_errors="ignore",
                            timeout=30.0 if "://" in source or live else None)  # fmt: skip
    except (av.error.FFmpegError, OSError) as e:
        raise DataError(f"{source}: cannot open it as a stream: {getattr(e, 'strerror', None) or e}") from None
    with container:
        if not container.streams.video:
            raise DataError(f"{source}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames = container.decode(stream)
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                return
            except (av.error.FFmpegError, OSError) as e:  # a dropped connection, a file cut short
                log.warning("%s: the stream broke off (%s); it ends here", source, getattr(e, "strerror", None) or e)
                return
            yield rotate(frame.to_ndarray(format="rgb24"), getattr(frame, "rotation", 0))


def _folder_frames(folder: Path) -> Iterator[np.ndarray]:
    source = FrameFolderSource(folder)
    for i in range(source.num_frames):
        yield source.decode([i])[0].numpy()


def stream_frames(source: str, size: int, scale_size: int | None = None) -> Iterator[torch.Tensor]:
    """The frames of ``source`` as uint8 ``(size, size, 3)`` tensors: the evaluation transform
    (:func:`~seqctx.video.data.transforms.build_transform`, one centre crop) on each frame."""
    transform = build_transform(False, size=size, scale_size=scale_size)
    path = Path(source)
    if path.is_dir():
        frames: Iterator[Any] = _folder_frames(path)
    elif path.is_file() or "://" in source or source.startswith(LIVE_PREFIXES):
        frames = _pyav_frames(source)
    else:
        raise DataError(f"{source}: no such file or folder (a stream is a video file, a frame folder, a camera "
                        "device or a URL FFmpeg opens)")  # fmt: skip
    for rgb in frames:
        view = transform(torch.from_numpy(np.ascontiguousarray(rgb)).unsqueeze(0))  # (1, 3, 1, size, size)
        yield view[0, :, 0].permute(1, 2, 0).contiguous()
