"""The index of an annotation file, held compactly: a Kinetics-400 training list (240k videos) is a
few MiB of NumPy arrays, not a Python object per video.

Why: DataLoader workers are forked, and reading a Python object writes its reference count, so a
worker that reads every record of a list of per-video objects copies the pages they live on
(copy-on-read: ~0.8 GiB per worker at 240k records, per worker, per rank). Reading a NumPy
array's bytes writes nothing, so the workers share the index with the process that built it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seqctx.errors import DataError


class StringTable(Sequence[str]):
    """Many strings in two arrays, their UTF-8 bytes end to end and the offsets where each starts:
    ``table[i]`` decodes string ``i``."""

    def __init__(self, strings: Sequence[str]) -> None:
        encoded = [s.encode("utf-8") for s in strings]
        self.offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=self.offsets[1:])
        self.data = np.frombuffer(b"".join(encoded), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:  # type: ignore[override]
        return self.data[self.offsets[i] : self.offsets[i + 1]].tobytes().decode("utf-8")

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(len(self)))

    @property
    def nbytes(self) -> int:
        return self.data.nbytes + self.offsets.nbytes


@dataclass(frozen=True)
class VideoRecord:
    """One annotated video, made on demand from the index: its id, class index (-1 when
    unlabelled), frame count (None unless a frame-folder list gives it) and group (Kinetics'
    ``split`` column; ``""`` elsewhere)."""

    id: str
    label: int
    num_frames: int | None = None
    group: str = ""


class VideoIndex(Sequence[VideoRecord]):
    """The videos of an annotation file: ids (a :class:`StringTable`), labels and frame counts
    (int32 arrays, -1 when unknown) and a group code per video (a few names).

    ``lines`` (the line of each video in ``source``) names the lines of repeated ids: a video
    listed twice is a :class:`DataError` (it would be trained on twice as often and counted twice,
    or not at all, in evaluation), raised here, when the file is read."""

    def __init__(
        self,
        ids: Sequence[str],
        labels: Sequence[int],
        num_frames: Sequence[int] | None = None,
        groups: Sequence[str] | None = None,
        source: str | Path = "",
        lines: Sequence[int] | None = None,
    ) -> None:
        if not ids:
            raise DataError(f"{source or 'the annotation file'} lists no videos")
        counts = Counter(ids)
        if len(counts) != len(ids):
            repeated = [vid for vid, c in counts.items() if c > 1]
            where = lines or range(1, len(ids) + 1)
            first = {vid: [n for n, v in zip(where, ids, strict=True) if v == vid] for vid in repeated[:3]}
            shown = "; ".join(f"{vid!r} on lines {', '.join(map(str, ns))}" for vid, ns in first.items())
            raise DataError(
                f"{source}: {len(repeated)} video(s) listed more than once ({shown}"
                f"{', ...' if len(repeated) > 3 else ''}); list each video once"
            )
        del counts
        self.ids = StringTable(ids)
        self.labels = np.asarray(labels, dtype=np.int32)
        self.num_frames = np.full(len(ids), -1, np.int32) if num_frames is None else np.asarray(num_frames, np.int32)
        names, codes = np.unique(np.asarray(groups if groups is not None else [""] * len(ids)), return_inverse=True)
        self.group_names: list[str] = [str(n) for n in names]
        self.groups = codes.astype(np.int16)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> VideoRecord:  # type: ignore[override]
        if not -len(self) <= i < len(self):
            raise IndexError(f"video {i} of {len(self)}")
        i %= len(self)
        frames = int(self.num_frames[i])
        return VideoRecord(self.ids[i], int(self.labels[i]), frames if frames >= 0 else None, self.group(i))

    def __iter__(self) -> Iterator[VideoRecord]:
        return (self[i] for i in range(len(self)))

    def group(self, i: int) -> str:
        return self.group_names[self.groups[i]]

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays (the group names and Python headers aside)."""
        return self.ids.nbytes + self.labels.nbytes + self.num_frames.nbytes + self.groups.nbytes
