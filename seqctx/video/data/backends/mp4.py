"""The display rotation of MP4/MOV files, read from the container's boxes (no decoding)."""

from __future__ import annotations

import io
import math
import struct
from collections.abc import Iterator
from typing import BinaryIO

from .base import Blob, Media


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


def mp4_rotation(path: Media) -> int:
    """The display rotation of an MP4/MOV's video track in degrees counter-clockwise (0, 90, 180,
    270; what FFmpeg calls the display matrix and phones write), read from its ``tkhd`` matrix
    ``[a b u; c d v; x y w]`` as ``-atan2(b, a)``; 0 for other containers. (decord resizing a
    rotated video returns it unrotated, so its backend must know before opening.)"""
    try:
        with io.BytesIO(path.data) if isinstance(path, Blob) else open(path, "rb") as f:
            end = f.seek(0, io.SEEK_END)
            f.seek(0)
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
