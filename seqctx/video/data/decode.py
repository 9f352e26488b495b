"""Reading frames: ``read_frames(path, indices, backend)`` -> uint8 ``(T, H, W, 3)``.

Backends: ``decord`` (default; ``VideoReader.get_batch`` on the sorted unique indices), ``pyav``
(seeks to the keyframe before each far-away wanted frame; opens what decord cannot, e.g. AV1),
``torchcodec`` (optional; needs the system's FFmpeg libraries) and ``frames`` (a folder of JPEG
frames, as Something-Something v1 ships). Open videos inside ``Dataset.__getitem__``, never in the
parent process: a decord reader opened before forking hangs the DataLoader workers.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal, Protocol, get_args

import numpy as np
import torch

from seqctx.errors import UserError

Backend = Literal["decord", "pyav", "torchcodec", "frames"]
BACKENDS: tuple[str, ...] = get_args(Backend)


class VideoError(UserError, RuntimeError):
    """A video that cannot be opened or decoded; the message names the file and the reason."""


class VideoSource(Protocol):
    num_frames: int

    def read(self, indices: Sequence[int]) -> torch.Tensor: ...


def _gather(unique: list[int], frames: np.ndarray | torch.Tensor, indices: Sequence[int]) -> torch.Tensor:
    """Frames decoded once for ``unique`` (sorted) -> the requested order, repeats included
    (``index_select``: advanced indexing of a uint8 clip cost as much as a quarter of its decoding)."""
    batch = torch.as_tensor(frames)
    if len(indices) == len(unique) and all(a == b for a, b in zip(indices, unique, strict=True)):
        return batch  # already in order (dense clips)
    pos = {idx: i for i, idx in enumerate(unique)}
    return batch.index_select(0, torch.tensor([pos[i] for i in indices]))


def _validate(indices: Sequence[int], num_frames: int, path: str | Path) -> list[int]:
    if len(indices) == 0:
        raise ValueError("read_frames needs at least one index")
    bad = [i for i in indices if not 0 <= i < num_frames]
    if bad:
        raise VideoError(f"{path}: frame indices {bad[:5]} out of range for {num_frames} frames")
    return sorted(set(int(i) for i in indices))


@contextlib.contextmanager
def native_stderr() -> Iterator[list[str]]:
    """Catch what native code (FFmpeg, decord's C++ logger) writes to file descriptor 2 for the
    duration of the block; the lines are in the yielded list afterwards, for an error message in
    words instead of log lines leaking into the terminal."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines += tmp.read().decode("utf-8", "replace").splitlines()


_DECORD_LOG = re.compile(r"^\[[\d:]+\] \S+: (?:ERROR \w+: [^,]*, )?")  # "[13:20:55] src/x.cc:83: ERROR opening: PATH, "


def native_reason(lines: Sequence[str], fallback: str) -> str:
    """The last line native code logged, without decord's time/source prefix; ``fallback`` when silent."""
    words = [_DECORD_LOG.sub("", line).strip() for line in lines if line.strip()]
    return words[-1] if words else fallback


class DecordSource:
    def __init__(self, path: str | Path, num_threads: int = 1) -> None:
        import decord

        self.path = path
        try:
            with native_stderr() as logged:
                self.reader = decord.VideoReader(str(path), num_threads=num_threads)
        except Exception as e:  # decord raises its own DECORDError and RuntimeErrors
            reason = native_reason(logged, str(e).splitlines()[0] if str(e) else type(e).__name__)
            raise VideoError(f"{path}: decord cannot open it: {reason}") from e
        self.num_frames = len(self.reader)

    def read(self, indices: Sequence[int]) -> torch.Tensor:
        unique = _validate(indices, self.num_frames, self.path)
        try:
            frames = self.reader.get_batch(unique).asnumpy()  # (U, H, W, 3) uint8
        except Exception as e:
            raise VideoError(f"{self.path}: decord failed to decode frames {unique[:5]}...: {e}") from e
        return _gather(unique, frames, indices)


def _displayed(frame: object) -> np.ndarray:
    """A PyAV frame as RGB ``(H, W, 3)`` in its displayed orientation: the stream's display
    matrix (phone videos) rotates it by ``frame.rotation`` degrees counter-clockwise, as decord
    and players show it."""
    rgb = frame.to_ndarray(format="rgb24")  # type: ignore[attr-defined]
    quarter = round(getattr(frame, "rotation", 0) / 90) % 4
    return np.rot90(rgb, quarter) if quarter else rgb


class PyAVSource:
    """PyAV decoding with keyframe seeking: frames are located by their timestamps, and the
    decoder seeks again when the next wanted frame is more than ``seek_gap`` frames ahead. Frames
    come in their displayed orientation; metadata that is not UTF-8 (old AVIs) is ignored."""

    def __init__(self, path: str | Path, seek_gap: int = 32, num_threads: int = 1) -> None:
        import av

        self.path = path
        self.seek_gap = seek_gap
        try:
            self.container = av.open(str(path), metadata_errors="ignore")
            self.stream = self.container.streams.video[0]
        except Exception as e:
            raise VideoError(f"{path}: PyAV cannot open it ({e})") from e
        self.stream.thread_type = "AUTO"
        self.stream.codec_context.thread_count = num_threads  # 0 would be FFmpeg's cores + 1 per worker
        rate = self.stream.average_rate or self.stream.guessed_rate
        if not rate:
            raise VideoError(f"{path}: no frame rate in the video stream")
        self.fps = float(rate)
        self.time_base = float(self.stream.time_base)
        self.start = self.stream.start_time or 0
        frames = self.stream.frames
        if not frames:  # containers like webm/mkv do not store a count: estimate from the duration
            duration = self.stream.duration or 0
            if duration:
                seconds = duration * self.time_base
            else:  # the container's duration counts from 0, the frames from the stream's start
                seconds = (self.container.duration or 0) / 1e6 - self.start * self.time_base
            frames = int(round(seconds * self.fps))
        if frames < 1:
            raise VideoError(f"{path}: the video stream has no frames")
        self.num_frames = frames

    def _index(self, pts: int) -> int:
        return int(round((pts - self.start) * self.time_base * self.fps))

    def read(self, indices: Sequence[int]) -> torch.Tensor:
        unique = _validate(indices, self.num_frames, self.path)
        got: dict[int, np.ndarray] = {}
        want = iter(unique)
        target: int | None = next(want)
        seek = target > self.seek_gap
        try:
            while target is not None:
                if seek:  # lands on the keyframe at or before the target
                    pts = self.start + int(target / self.fps / self.time_base)
                    self.container.seek(pts, stream=self.stream, backward=True, any_frame=False)
                seek, last = False, None
                for frame in self.container.decode(self.stream):
                    position = self._index(frame.pts if frame.pts is not None else 0)
                    last, collected = frame, False
                    while target is not None and position >= target:
                        got[target] = _displayed(frame)
                        target, collected = next(want, None), True
                    if target is None:
                        break
                    if collected and target - position > self.seek_gap:
                        seek = True  # the next wanted frame is far: jump instead of decoding
                        break
                else:  # end of stream: timestamps ran short of the estimated count; repeat the last frame
                    if last is None:
                        raise VideoError(f"{self.path}: no frame decoded at or after index {target}")
                    while target is not None:
                        got[target] = _displayed(last)
                        target = next(want, None)
        except VideoError:
            raise
        except Exception as e:
            raise VideoError(f"{self.path}: PyAV failed to decode: {e}") from e
        return _gather(unique, np.stack([got[i] for i in unique]), indices)


class TorchCodecSource:
    def __init__(self, path: str | Path) -> None:
        try:
            from torchcodec.decoders import VideoDecoder
        except Exception as e:  # ImportError, or a RuntimeError when FFmpeg's libraries are missing
            raise VideoError(
                f"backend='torchcodec' needs the torchcodec package and the system's FFmpeg libraries "
                f"(e.g. Debian's libavcodec59 family): {str(e).splitlines()[0] if str(e) else type(e).__name__}"
            ) from e
        self.path = path
        try:
            self.decoder = VideoDecoder(str(path), dimension_order="NHWC", device="cpu")
        except Exception as e:
            raise VideoError(f"{path}: torchcodec cannot open it ({e})") from e
        self.num_frames = int(self.decoder.metadata.num_frames or len(self.decoder))

    def read(self, indices: Sequence[int]) -> torch.Tensor:
        unique = _validate(indices, self.num_frames, self.path)
        return _gather(unique, self.decoder.get_frames_at(unique).data, indices)


class FrameFolderSource:
    """A folder of JPEG frames ``{folder}/{template.format(i + start)}`` (SSv1: ``00001.jpg``); a
    folder whose frames are not numbered without gaps from ``start`` is a :class:`VideoError`
    naming the first missing ones (a gap would shift every later frame index)."""

    def __init__(self, folder: str | Path, template: str = "{:05d}.jpg", start: int = 1) -> None:
        self.folder = Path(folder)
        self.template, self.start = template, start
        if not self.folder.is_dir():
            raise VideoError(f"{folder}: no such frame folder")
        suffix = Path(template.format(0)).suffix
        names = {name for name in os.listdir(self.folder) if name.endswith(suffix)}
        self.num_frames = len(names)
        if self.num_frames == 0:
            raise VideoError(f"{folder}: the frame folder holds no '{suffix}' files")
        missing = [
            template.format(i + start) for i in range(self.num_frames) if template.format(i + start) not in names
        ]
        if missing:
            raise VideoError(
                f"{folder}: {self.num_frames} '{suffix}' frames, but {len(missing)} of "
                f"{template.format(start)}..{template.format(start + self.num_frames - 1)} are missing "
                f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}): frames must be numbered without gaps"
            )

    def read(self, indices: Sequence[int]) -> torch.Tensor:
        from torchvision.io import ImageReadMode, decode_jpeg, read_file

        unique = _validate(indices, self.num_frames, self.folder)
        frames = []
        for i in unique:
            path = self.folder / self.template.format(i + self.start)
            try:
                frames.append(decode_jpeg(read_file(str(path)), mode=ImageReadMode.RGB).permute(1, 2, 0))
            except Exception as e:
                raise VideoError(f"{path}: cannot decode the JPEG frame ({e})") from e
        return _gather(unique, torch.stack(frames), indices)


def open_video(path: str | Path, backend: str = "decord", num_threads: int = 1) -> VideoSource:
    """Open a video (or a frame folder with ``backend="frames"``); ``.num_frames``, ``.read(idx)``.
    ``num_threads``: decoding threads of decord and PyAV (one per DataLoader worker by default:
    a node runs many workers).
    A missing or empty file raises :class:`VideoError` naming it, whatever the backend."""
    path = Path(path)
    if backend != "frames" and not path.is_file():
        raise VideoError(f"{path}: no such file")
    if backend != "frames" and path.stat().st_size == 0:
        raise VideoError(f"{path}: the file is empty")
    if backend == "decord":
        return DecordSource(path, num_threads)
    if backend == "pyav":
        return PyAVSource(path, num_threads=num_threads)
    if backend == "torchcodec":
        return TorchCodecSource(path)
    if backend == "frames":
        return FrameFolderSource(path)
    raise ValueError(f"unknown video backend {backend!r}; valid backends: {', '.join(BACKENDS)}")


def read_frames(path: str | Path, indices: Sequence[int], backend: str = "decord") -> torch.Tensor:
    """The frames at ``indices`` (0-based, any order, repeats allowed) as uint8 ``(T, H, W, 3)``."""
    return open_video(path, backend).read(indices)
