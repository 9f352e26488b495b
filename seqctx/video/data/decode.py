"""Reading frames: ``read_frames(path, indices, backend, short_side)`` -> uint8 ``(T, H, W, 3)``.

Backends: ``decord`` (default; ``VideoReader.get_batch``), ``pyav`` (seeks to the keyframe before
each far-away wanted frame; opens what decord cannot, e.g. AV1), ``torchcodec`` (optional; needs the
system's FFmpeg libraries) and ``frames`` (a folder of JPEG frames, as Something-Something v1 ships).
Open videos inside ``Dataset.__getitem__``, never in the parent process: a decord reader opened
before forking hangs the DataLoader workers.

**Frame-exact.** Frame ``i`` is the ``i``-th frame a sequential decode of the file gives (every
frame decoded in order). PyAV finds frames by their presentation timestamps, read from the
container's packets when the video is opened (no guessing from the frame rate). Where timestamps
cannot name frames — AVI (it stores decode order only: B-frames come back as neighbours) and, for
decord, MPEG-4 Part 2 (XviD/DivX) in any container — the backend decodes forward from the start
instead of seeking (:attr:`VideoSource.access` is ``"sequential"``; ``seqctx data check`` counts them).

**Decoding at the size used.** ``short_side=S`` makes frames come out of the decoder with their
shorter side ``S`` and the longer one ``round(long * S / short)`` rounded to the nearest even
number (as FFmpeg's ``scale=-2``; :func:`scaled_size`), aspect kept, in displayed orientation:
decord resizes in its decoder, PyAV through FFmpeg's scaler as each frame is converted, JPEG frames
through PIL's draft mode (a DCT-domain downscale) then an antialiased resize; torchcodec decodes at
full size then resizes. A 1080p frame is 27 MB of RGB, at ``S = 256`` 0.35 MB.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import struct
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, Literal, get_args

import numpy as np
import torch

from seqctx.errors import UserError

Backend = Literal["decord", "pyav", "torchcodec", "frames"]
BACKENDS: tuple[str, ...] = get_args(Backend)
Access = Literal["seek", "sequential"]


class VideoError(UserError, RuntimeError):
    """A video that cannot be opened or decoded; the message names the file and the reason."""


def scaled_size(height: int, width: int, short_side: int | None) -> tuple[int, int]:
    """``(height, width)`` with the shorter side ``short_side`` and the longer one
    ``round(long * short_side / short)`` to the nearest even number (at least 2); unchanged for
    ``None``."""
    if short_side is None:
        return height, width
    short, long = min(height, width), max(height, width)
    scaled = max(2, 2 * round(long * short_side / short / 2))
    return (short_side, scaled) if height <= width else (scaled, short_side)


def _boxes(f: BinaryIO, end: int) -> Iterator[tuple[bytes, int, int]]:
    """``(type, body start, box end)`` of the ISO-BMFF boxes from ``f``'s position to ``end``."""
    while f.tell() + 8 <= end:
        start = f.tell()
        size, kind = struct.unpack(">I4s", f.read(8))
        if size == 1:
            size = struct.unpack(">Q", f.read(8))[0]
        elif size == 0:
            size = end - start
        if size < 8:
            return
        body = f.tell()
        yield kind, body, start + size
        f.seek(start + size)


def mp4_rotation(path: str | Path) -> int:
    """The display rotation of an MP4/MOV's video track in degrees counter-clockwise (0, 90, 180,
    270; what FFmpeg calls the display matrix and phones write), read from its ``tkhd`` matrix
    ``[a b u; c d v; x y w]`` as ``-atan2(b, a)``; 0 for other containers. (PyAV exposes the
    rotation only on decoded frames, and decord resizing a rotated video returns it unrotated.)"""
    try:
        with open(path, "rb") as f:
            end = os.fstat(f.fileno()).st_size
            for kind, _, stop in _boxes(f, end):
                if kind != b"moov":
                    continue
                for track, _, tstop in _boxes(f, stop):
                    if track != b"trak":
                        continue
                    matrix, handler = None, b""
                    for box, bbody, bstop in _boxes(f, tstop):
                        if box == b"tkhd":
                            f.seek(bbody)
                            version = f.read(1)[0]
                            f.seek(bbody + 4 + (32 if version == 1 else 20) + 16)  # times, ids, layer, volume
                            matrix = struct.unpack(">9i", f.read(36))
                        elif box == b"mdia":
                            for sub, sbody, _ in _boxes(f, bstop):
                                if sub == b"hdlr":
                                    f.seek(sbody + 8)
                                    handler = f.read(4)
                    if handler == b"vide" and matrix is not None:
                        return round(-math.degrees(math.atan2(matrix[1], matrix[0]))) % 360
    except (OSError, struct.error, IndexError):
        pass
    return 0


def _gather(unique: list[int], frames: torch.Tensor, indices: Sequence[int]) -> torch.Tensor:
    """Frames decoded once for ``unique`` (sorted) -> the requested order, repeats included
    (``index_select``: advanced indexing of a uint8 clip cost as much as a quarter of its decoding)."""
    if len(indices) == len(unique) and all(a == b for a, b in zip(indices, unique, strict=True)):
        return frames  # already in order (dense clips)
    pos = {idx: i for i, idx in enumerate(unique)}
    return frames.index_select(0, torch.tensor([pos[i] for i in indices]))


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


# "[13:20:55] src/x.cc:83: ERROR opening: PATH, " or "[13:20:55] src/x.cc:270: [PATH] "
_DECORD_LOG = re.compile(r"^\[[\d:]+\] \S+: (?:ERROR \w+: [^,]*, |\[[^\]]*\] )?")


def native_reason(lines: Sequence[str], fallback: str) -> str:
    """The last line native code logged, without decord's time/source prefix; ``fallback`` when silent."""
    words = [_DECORD_LOG.sub("", line).strip() for line in lines if line.strip()]
    return words[-1] if words else fallback


def _rotate(rgb: np.ndarray, degrees: int) -> np.ndarray:
    """Turn ``(H, W, 3)`` (or ``(N, H, W, 3)``) frames ``degrees`` counter-clockwise (a multiple of 90)."""
    quarter = round(degrees / 90) % 4
    return np.rot90(rgb, quarter, axes=(-3, -2)) if quarter else rgb


class VideoSource:
    """An opened video: :attr:`num_frames`, :attr:`access` and :meth:`decode` of sorted unique
    frame indices; :meth:`read` any indices."""

    path: str | Path
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
        return _gather(unique, self.decode(unique), indices)


class _Probe:
    """What FFmpeg (through PyAV) says of a file without decoding: container, codec, coded size."""

    def __init__(self, path: str | Path, backend: str) -> None:
        import av

        try:
            with av.open(str(path), metadata_errors="ignore") as container:
                stream = container.streams.video[0]
                self.container = container.format.name
                self.codec = stream.codec_context.name
                self.width, self.height = stream.codec_context.width, stream.codec_context.height
        except Exception as e:  # av.error.FFmpegError: strerror is the reason in words
            raise VideoError(f"{path}: {backend} cannot open it: {getattr(e, 'strerror', None) or e}") from e


def _seeks_exactly(container: str, codec: str, backend: str) -> bool:
    """AVI stores decode order only; decord maps timestamps of MPEG-4 Part 2 (packed B-frames)
    to the wrong frames in any container (both measured against sequential decoding)."""
    return "avi" not in container.split(",") and not (backend == "decord" and codec == "mpeg4")


class DecordSource(VideoSource):
    """decord's ``VideoReader``; with ``short_side`` it resizes in its decoder. Two decord 0.6
    faults are avoided: a resized video turned by 90 or 270 degrees comes back garbled (such a
    video is decoded at full size, then resized), and ``seek``/``skip_frames`` land on wrong
    frames where seeking is inexact (there, frames are read with ``next`` from a fresh reader)."""

    def __init__(self, path: str | Path, num_threads: int = 1, short_side: int | None = None) -> None:
        self.path, self.short_side = path, short_side
        probe = _Probe(path, "decord")
        self.access = "seek" if _seeks_exactly(probe.container, probe.codec, "decord") else "sequential"
        height, width = scaled_size(probe.height, probe.width, short_side)
        self.resize_after = short_side is not None and mp4_rotation(path) in (90, 270)
        resize_in_decoder = short_side is not None and not self.resize_after
        self.options = {"num_threads": num_threads} | ({"width": width, "height": height} if resize_in_decoder else {})
        self.reader = self._open()
        self.num_frames = len(self.reader)
        self.used = False  # a sequential read needs a fresh reader

    def _open(self) -> object:
        import decord

        try:
            with native_stderr() as logged:
                return decord.VideoReader(str(self.path), **self.options)
        except Exception as e:  # decord raises its own DECORDError and RuntimeErrors
            reason = native_reason([*logged, *str(e).splitlines()[:1]], type(e).__name__)
            raise VideoError(f"{self.path}: decord cannot open it: {reason}") from e

    def decode(self, unique: list[int]) -> torch.Tensor:
        try:
            if self.access == "seek":
                frames = self.reader.get_batch(unique).asnumpy()  # (U, H, W, 3) uint8
            else:
                reader = self._open() if self.used else self.reader
                wanted, kept = set(unique), []
                for i in range(unique[-1] + 1):
                    frame = reader.next()
                    if i in wanted:
                        kept.append(frame.asnumpy())
                frames = np.stack(kept)
            self.used = True
        except Exception as e:
            raise VideoError(f"{self.path}: decord failed to decode frames {unique[:5]}...: {e}") from e
        frames = torch.from_numpy(frames)
        return _resize_frames(frames, self.short_side) if self.resize_after else frames


class PyAVSource(VideoSource):
    """PyAV decoding. Opening reads the container's packets (no decoding): their presentation
    timestamps, in order, name the frames, and their keyframe flags tell where a seek lands. The
    decoder seeks when a keyframe lies between the frame it is at and the next wanted one, and
    decodes forward otherwise. Frames come in their displayed orientation (the stream's display
    matrix, as decord and players show it), scaled by FFmpeg's scaler to ``short_side``;
    metadata that is not UTF-8 (old AVIs) is ignored."""

    def __init__(self, path: str | Path, num_threads: int = 1, short_side: int | None = None) -> None:
        import av

        self.path, self.short_side, self.num_threads = path, short_side, num_threads
        try:
            self.container = av.open(str(path), metadata_errors="ignore")
            self.stream = self.container.streams.video[0]
            packets = [(p.pts, p.is_keyframe) for p in self.container.demux(self.stream) if p.size]
        except Exception as e:
            raise VideoError(f"{path}: PyAV cannot open it ({e})") from e
        self.stream.thread_type = "AUTO"
        self.stream.codec_context.thread_count = num_threads  # 0 would be FFmpeg's cores + 1 per worker
        if not packets:
            raise VideoError(f"{path}: the video stream has no frames")
        self.num_frames = len(packets)
        stamps = [pts for pts, _ in packets]
        exact = None not in stamps and len(set(stamps)) == len(stamps)
        self.access = "seek" if exact and _seeks_exactly(self.container.format.name, "", "pyav") else "sequential"
        if self.access == "seek":
            self.pts = sorted(stamps)  # presentation order: frame i has pts[i]
            self.index_of = {pts: i for i, pts in enumerate(self.pts)}
            is_key = np.zeros(self.num_frames, bool)
            is_key[[self.index_of[pts] for pts, key in packets if key]] = True
            self.keyframe_before = np.maximum.accumulate(np.where(is_key, np.arange(self.num_frames), 0))

    def _rgb(self, frame: object) -> np.ndarray:
        height, width = scaled_size(frame.height, frame.width, self.short_side)  # type: ignore[attr-defined]
        rgb = frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA")  # type: ignore[attr-defined]
        return _rotate(rgb, getattr(frame, "rotation", 0))

    def _rewind(self) -> None:
        """Back to the first frame: opening again is the one way that works for every stream (raw ones too)."""
        import av

        self.container.close()
        self.container = av.open(str(self.path), metadata_errors="ignore")
        self.stream = self.container.streams.video[0]
        self.stream.thread_type, self.stream.codec_context.thread_count = "AUTO", self.num_threads

    def frames(self) -> Iterator[np.ndarray]:
        """Every frame in order from the first, displayed and scaled: uint8 ``(H, W, 3)`` each."""
        self._rewind()
        for frame in self.container.decode(self.stream):
            yield self._rgb(frame)

    def _sequential(self, unique: list[int]) -> dict[int, np.ndarray]:
        got: dict[int, np.ndarray] = {}
        self._rewind()
        wanted = set(unique)
        for i, frame in enumerate(self.container.decode(self.stream)):
            if i in wanted:
                got[i] = self._rgb(frame)
                if len(got) == len(wanted):
                    break
        return got

    def _seeking(self, unique: list[int]) -> dict[int, np.ndarray]:
        got: dict[int, np.ndarray] = {}
        pending = iter(unique)
        target: int | None = next(pending)
        position: int | None = None  # the last frame decoded since the last seek
        restart = False  # a seek landed after its target: decode this one from the first frame
        while target is not None:
            if position is None or self.keyframe_before[target] > position:  # a keyframe closer than here
                start = 0 if restart else int(self.keyframe_before[target])
                self.container.seek(self.pts[start], stream=self.stream, backward=True, any_frame=False)
            for frame in self.container.decode(self.stream):
                index = self.index_of.get(frame.pts)
                if index is None:
                    continue  # a frame no packet announced
                if index > target:
                    if restart:
                        raise VideoError(f"{self.path}: frame {target} is not in the decoded stream")
                    restart, position = True, None
                    break
                position = index
                if index == target:
                    got[target], restart = self._rgb(frame), False
                    target = next(pending, None)
                    if target is None or self.keyframe_before[target] > position:
                        break
            else:
                raise VideoError(f"{self.path}: the stream ended before frame {target}")
        return got

    def decode(self, unique: list[int]) -> torch.Tensor:
        try:
            got = self._seeking(unique) if self.access == "seek" else self._sequential(unique)
        except VideoError:
            raise
        except Exception as e:
            raise VideoError(f"{self.path}: PyAV failed to decode: {e}") from e
        missing = [i for i in unique if i not in got]
        if missing:
            raise VideoError(f"{self.path}: frames {missing[:5]} could not be decoded ({self.num_frames} packets)")
        return torch.from_numpy(np.stack([got[i] for i in unique]))


def _resize_frames(frames: torch.Tensor, short_side: int | None) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` resized (antialiased bilinear) to :func:`scaled_size`."""
    height, width = scaled_size(frames.shape[1], frames.shape[2], short_side)
    if (height, width) == tuple(frames.shape[1:3]):
        return frames
    from torchvision.transforms.v2 import functional as TF

    return TF.resize(frames.permute(0, 3, 1, 2), [height, width], antialias=True).permute(0, 2, 3, 1).contiguous()


class TorchCodecSource(VideoSource):
    """torchcodec's ``VideoDecoder`` (exact seek mode: it scans the file when opened); with
    ``short_side`` it decodes at full size, then resizes."""

    def __init__(self, path: str | Path, short_side: int | None = None) -> None:
        try:
            from torchcodec.decoders import VideoDecoder
        except Exception as e:  # ImportError, or a RuntimeError when FFmpeg's libraries are missing
            raise VideoError(
                f"backend='torchcodec' needs the torchcodec package and the system's FFmpeg libraries "
                f"(e.g. Debian's libavcodec59 family): {str(e).splitlines()[0] if str(e) else type(e).__name__}"
            ) from e
        self.path, self.short_side = path, short_side
        try:
            self.decoder = VideoDecoder(str(path), dimension_order="NHWC", device="cpu")
        except Exception as e:
            raise VideoError(f"{path}: torchcodec cannot open it ({e})") from e
        self.num_frames = int(self.decoder.metadata.num_frames or len(self.decoder))

    def decode(self, unique: list[int]) -> torch.Tensor:
        return _resize_frames(self.decoder.get_frames_at(unique).data, self.short_side)


class FrameFolderSource(VideoSource):
    """A folder of JPEG frames ``{folder}/{template.format(i + start)}`` (SSv1: ``00001.jpg``); a
    folder whose frames are not numbered without gaps from ``start`` is a :class:`VideoError`
    naming the first missing ones (a gap would shift every later frame index). With
    ``short_side``, PIL's draft mode decodes at the smallest 1/2, 1/4 or 1/8 scale that is not
    below the size, then an antialiased resize gives it exactly."""

    def __init__(
        self, folder: str | Path, template: str = "{:05d}.jpg", start: int = 1, short_side: int | None = None
    ) -> None:
        self.path = self.folder = Path(folder)
        self.template, self.start, self.short_side = template, start, short_side
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

    def _jpeg(self, path: Path) -> torch.Tensor:
        if self.short_side is None:
            from torchvision.io import ImageReadMode, decode_jpeg, read_file

            return decode_jpeg(read_file(str(path)), mode=ImageReadMode.RGB).permute(1, 2, 0)
        from PIL import Image

        with Image.open(path) as image:
            height, width = scaled_size(image.height, image.width, self.short_side)
            image.draft("RGB", (width, height))  # JPEG: decode at a DCT scale >= the size
            rgb = image.convert("RGB")
            if rgb.size != (width, height):
                rgb = rgb.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=None)
            return torch.from_numpy(np.asarray(rgb).copy())

    def decode(self, unique: list[int]) -> torch.Tensor:
        frames = []
        for i in unique:
            path = self.folder / self.template.format(i + self.start)
            try:
                frames.append(self._jpeg(path))
            except Exception as e:
                raise VideoError(f"{path}: cannot decode the JPEG frame ({e})") from e
        return torch.stack(frames)


def open_video(
    path: str | Path, backend: str = "decord", num_threads: int = 1, short_side: int | None = None
) -> VideoSource:
    """Open a video (or a frame folder with ``backend="frames"``); ``.num_frames``, ``.read(idx)``.
    ``num_threads``: decoding threads of decord and PyAV (one per DataLoader worker by default:
    a node runs many workers). ``short_side``: decode at that shorter side (see the module).
    A missing or empty file raises :class:`VideoError` naming it, whatever the backend."""
    path = Path(path)
    if short_side is not None and short_side < 1:
        raise ValueError(f"short_side must be a positive number of pixels or None, got {short_side}")
    if backend != "frames" and not path.is_file():
        raise VideoError(f"{path}: no such file")
    if backend != "frames" and path.stat().st_size == 0:
        raise VideoError(f"{path}: the file is empty")
    if backend == "decord":
        return DecordSource(path, num_threads, short_side)
    if backend == "pyav":
        return PyAVSource(path, num_threads, short_side)
    if backend == "torchcodec":
        return TorchCodecSource(path, short_side)
    if backend == "frames":
        return FrameFolderSource(path, short_side=short_side)
    raise ValueError(f"unknown video backend {backend!r}; valid backends: {', '.join(BACKENDS)}")


def read_frames(
    path: str | Path, indices: Sequence[int], backend: str = "decord", short_side: int | None = None
) -> torch.Tensor:
    """The frames at ``indices`` (0-based, any order, repeats allowed) as uint8 ``(T, H, W, 3)``,
    with the shorter side ``short_side`` when given."""
    return open_video(path, backend, short_side=short_side).read(indices)


def read_sequential(
    path: str | Path, indices: Sequence[int], backend: str = "decord", short_side: int | None = None
) -> torch.Tensor:
    """The frames at ``indices`` as a sequential decode gives them (every frame decoded in order
    from the first, no seeking): the ground truth :func:`read_frames` is compared with
    (``seqctx data check --exact``)."""
    source = open_video(path, backend, short_side=short_side)
    if isinstance(source, (DecordSource, PyAVSource)):
        source.access = "sequential"
    return source.read(indices)
