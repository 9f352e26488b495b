"""Video classification datasets: Kinetics, Something-Something v1/v2 and generic list files.

Each item is ``(views, label, meta)``: the transformed views ``(V, 3, T, H, W)`` (``V = 1`` in
training; clips x crops in multi-view testing), the class index (-1 when unlabelled) and a dict
with the video's ``id``, ``path`` and ``index``. The path of the data:
annotation -> record -> sampler (clips of frame indices) -> ``read_frames`` -> transform; :func:`collate_clips`
batches items for the DataLoader.
"""

from __future__ import annotations

import csv
import json
import logging
import multiprocessing as mp
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from seqctx.errors import DataError

from .decode import VideoError, open_video
from .sampling import Clips, build_sampler

log = logging.getLogger(__name__)

Sampler = Callable[..., Clips]  # sampler(num_frames, rng=generator) -> clips of frame indices
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov")
ON_ERROR = ("replace", "drop", "raise")
LOAD_ERRORS = (VideoError, OSError, RuntimeError, ValueError)


@dataclass(frozen=True)
class VideoRecord:
    """One annotated video: where it is (a file, a frame folder, or candidate paths to try)."""

    id: str
    label: int
    candidates: tuple[Path, ...]
    num_frames: int | None = None  # known for frame folders listed with their count


class VideoDataset(Dataset):
    """Shared machinery: sampling, decoding, transforms and the ``on_error`` policy.

    Args:
        records: the annotated videos.
        sampler: ``sampler(num_frames, rng=generator) -> clips`` (a list of clips, each a list of
            frame indices), e.g. ``build_sampler("segments", train=True, num_segments=8)``;
            default: the 8 segment centres.
        transform: maps each clip's uint8 ``(T, H, W, 3)`` frames to views ``(V_c, 3, T, H, W)``
            (:func:`build_transform`); without one an item holds the raw frames
            ``(clips, T, H, W, 3)``.
        on_error: what an unreadable video gives. ``"replace"`` (training) logs it once (path
            and reason), counts it in :attr:`failures` and returns another sample chosen
            deterministically; ``"drop"`` (evaluation: no video may stand in for another) counts
            and logs it and returns ``(None, label, meta)`` with the reason in ``meta["error"]``,
            which :func:`collate_clips` leaves out of the batch and lists in
            ``meta["failed"]``; ``"raise"`` raises :class:`VideoError` naming the file.
        backend: ``decord``, ``pyav``, ``torchcodec`` or ``frames``.
        classes: class names by index.
        seed: with :meth:`set_epoch`, makes each item's random sampling and augmentation a
            function of ``(seed, epoch, index)`` only: the same whatever the number of workers or
            processes, and exactly reproducible when a run resumes.
    """

    def __init__(
        self,
        records: Sequence[VideoRecord],
        sampler: Sampler | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        on_error: str = "replace",
        backend: str = "decord",
        classes: Sequence[str] = (),
        seed: int = 0,
    ) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        if not records:
            raise DataError("the annotation file lists no videos")
        self.records = list(records)
        self.sampler = sampler or build_sampler("segments", train=False)
        self.transform = transform
        self.on_error = on_error
        self.backend = backend
        self.classes = list(classes)
        self.seed = seed
        self._epoch = mp.Value("i", 0)  # shared with DataLoader workers, persistent ones too
        self._failures = mp.Value("i", 0)
        self._logged: set[str] = set()

    @property
    def epoch(self) -> int:
        return int(self._epoch.value)

    def set_epoch(self, epoch: int) -> None:
        """The epoch that seeds sampling and augmentation; seen by running DataLoader workers."""
        self._epoch.value = epoch

    @property
    def failures(self) -> int:
        """Videos that failed to load since the last :meth:`reset_failures` (all workers)."""
        return int(self._failures.value)

    def reset_failures(self) -> None:
        with self._failures.get_lock():
            self._failures.value = 0

    def __len__(self) -> int:
        return len(self.records)

    def resolve(self, record: VideoRecord) -> Path:
        for path in record.candidates:
            if path.exists():
                return path
        tried = ", ".join(str(p) for p in record.candidates[:3])
        raise VideoError(f"video {record.id!r} not found (looked for {tried})")

    def load(self, index: int) -> tuple[torch.Tensor, int, dict[str, object]]:
        """Item ``index`` with no error policy: raises :class:`VideoError`."""
        record = self.records[index]
        path = self.resolve(record)
        source = open_video(path, self.backend)  # opened here, in the worker
        rng = np.random.default_rng([self.seed, self.epoch, index])
        clips = self.sampler(source.num_frames, rng=rng)
        frames = source.read([i for clip in clips for i in clip])  # one decode for all clips: (sum T, H, W, 3)
        views = []
        with torch.random.fork_rng(devices=[]):  # torchvision's transforms draw from torch's RNG
            torch.manual_seed(int(rng.integers(2**62)))
            start = 0
            for clip in clips:
                x = frames[start : start + len(clip)]  # (T, H, W, 3)
                start += len(clip)
                views.append(self.transform(x) if self.transform is not None else x.unsqueeze(0))
        out = torch.cat(views)  # (V, 3, T, H, W): clips x crops
        meta = {"id": record.id, "path": str(path), "index": index}
        return out, record.label, meta

    def _count_failure(self, index: int, error: Exception, action: str) -> None:
        with self._failures.get_lock():
            self._failures.value += 1
        key = str(self.records[index].id)
        if key not in self._logged:
            self._logged.add(key)
            log.warning("%s video %s: %s", action, key, error)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, int, dict[str, object]]:
        if self.on_error == "raise":
            return self.load(index)
        if self.on_error == "drop":
            try:
                return self.load(index)
            except LOAD_ERRORS as e:
                self._count_failure(index, e, "leaving out")
                record = self.records[index]
                return None, record.label, {"id": record.id, "path": "", "index": index, "error": str(e)}
        for attempt in range(min(len(self), 20)):
            j = (index + attempt * 7919) % len(self)  # deterministic replacement
            try:
                return self.load(j)
            except LOAD_ERRORS as e:
                self._count_failure(j, e, "replacing")
        raise VideoError(f"20 videos in a row failed to load, starting at item {index}; check the data set")

    def check_found(self, count: int = 5) -> None:
        """Raise :class:`DataError` when none of the first ``count`` videos exists: a wrong
        ``root`` (or annotation) found before any work starts; the message says where it looked."""
        head = self.records[:count]
        for record in head:
            if any(path.exists() for path in record.candidates):
                return
        looked = "; ".join(str(r.candidates[0]) for r in head[:3])
        raise DataError(
            f"none of the first {len(head)} videos of the annotation file exists (looked for {looked}, ...); "
            "check data.root and the annotation file"
        )

    def max_label(self) -> int:
        """The largest class index in the annotations (-1 when nothing is labelled)."""
        return max(r.label for r in self.records)


def collate_clips(
    batch: Sequence[tuple[torch.Tensor | None, int, dict[str, object]]],
) -> tuple[torch.Tensor, torch.Tensor, dict[str, object]]:
    """Batch ``(views, label, meta)`` items: ``clips (B, V, 3, T, H, W)``, ``labels (B,)`` and ``meta`` (lists
    of ``id``, ``path``, ``index``) of the readable items, plus ``meta["failed"]``: the
    ``(id, reason)`` of the items left out (``on_error="drop"``). ``B`` may be 0."""
    ok = [item for item in batch if item[0] is not None]
    failed = [(str(m["id"]), str(m["error"])) for clip, _, m in batch if clip is None]
    if ok:
        clips, labels, meta = default_collate(ok)
    else:
        clips, labels, meta = torch.empty(0), torch.empty(0, dtype=torch.long), {"id": [], "path": [], "index": []}
    meta["failed"] = failed
    return clips, labels, meta


def read_label_list(path: str | Path) -> list[str]:
    """One class name per line (blank lines ignored)."""
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]


def _label_index(classes: Sequence[str], label: str, source: str | Path) -> int:
    try:
        return classes.index(label)
    except ValueError:
        raise DataError(f"{source}: label {label!r} is not in the label map ({len(classes)} classes)") from None


class KineticsDataset(VideoDataset):
    """Kinetics-400/600/700 from the official CSV (``label,youtube_id,time_start,time_end,split
    [,is_cc]``). Videos are found as ``{root}/{split}/{label}/{id}_{start:06d}_{end:06d}.{ext}``,
    flat ``{root}/{id}_{start:06d}_{end:06d}.{ext}`` or ``{root}/{id}.{ext}``, for any extension
    decord opens. Class index = position in the sorted label names, or in ``label_map``."""

    def __init__(self, csv_file: str | Path, root: str | Path, label_map: str | Path | None = None, **kwargs) -> None:
        root = Path(root)
        with open(csv_file, newline="") as f:
            rows = list(csv.DictReader(f))
        if rows and not {"youtube_id", "time_start", "time_end"} <= set(rows[0]):
            raise DataError(f"{csv_file}: expected the Kinetics columns label,youtube_id,time_start,time_end,split")
        classes = read_label_list(label_map) if label_map else sorted({r["label"] for r in rows if r.get("label")})
        records = []
        for r in rows:
            stem = f"{r['youtube_id']}_{int(float(r['time_start'])):06d}_{int(float(r['time_end'])):06d}"
            label = _label_index(classes, r["label"], csv_file) if r.get("label") else -1
            dirs = [root / r.get("split", "") / r.get("label", ""), root]
            names = [stem, r["youtube_id"]]
            cands = tuple(d / (n + ext) for d in dirs for n in names for ext in VIDEO_EXTENSIONS)
            records.append(VideoRecord(stem, label, cands))
        super().__init__(records, classes=classes, **kwargs)


def ssv2_template(template: str) -> str:
    """The labels-file key of an SSv2 template: ``[`` and ``]`` removed."""
    return template.replace("[", "").replace("]", "")


class SomethingSomethingV2(VideoDataset):
    """Something-Something v2: the official JSON (``id``, ``label``, ``template``,
    ``placeholders``; the test JSON has ``id`` only), the labels JSON (``template -> "index"``)
    and videos ``{root}/{id}.webm``."""

    def __init__(self, json_file: str | Path, labels_file: str | Path, root: str | Path, **kwargs) -> None:
        root = Path(root)
        label_ids = {k: int(v) for k, v in json.loads(Path(labels_file).read_text()).items()}
        classes = [""] * len(label_ids)
        for name, i in label_ids.items():
            classes[i] = name
        records = []
        for entry in json.loads(Path(json_file).read_text()):
            if "template" in entry:
                key = ssv2_template(entry["template"])
                if key not in label_ids:
                    raise DataError(f"{json_file}: template {key!r} of video {entry['id']} is not in {labels_file}")
                label = label_ids[key]
            else:
                label = -1
            vid = str(entry["id"])
            records.append(VideoRecord(vid, label, tuple(root / f"{vid}{ext}" for ext in (".webm", ".mp4"))))
        super().__init__(records, classes=classes, **kwargs)


class SomethingSomethingV1(VideoDataset):
    """Something-Something v1: CSV lines ``id;label`` (test: ``id``), the labels CSV (one class
    name per line) and JPEG frame folders ``{root}/{id}/00001.jpg``."""

    def __init__(self, csv_file: str | Path, labels_file: str | Path, root: str | Path, **kwargs) -> None:
        root = Path(root)
        classes = read_label_list(labels_file)
        records = []
        for line in Path(csv_file).read_text().splitlines():
            if not line.strip():
                continue
            vid, _, name = line.strip().partition(";")
            label = _label_index(classes, name, csv_file) if name else -1
            records.append(VideoRecord(vid, label, (root / vid,)))
        kwargs.setdefault("backend", "frames")
        super().__init__(records, classes=classes, **kwargs)


class VideoListDataset(VideoDataset):
    """The TSM list format: ``path label`` (videos) or ``path num_frames label`` (frame folders),
    paths relative to ``root``; so any other data set works."""

    def __init__(self, list_file: str | Path, root: str | Path, classes: Sequence[str] = (), **kwargs) -> None:
        root = Path(root)
        records = []
        folders = False
        for n, line in enumerate(Path(list_file).read_text().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts[1:]):
                raise DataError(
                    f"{list_file}, line {n}: expected 'path label' (a video) or 'path num_frames label' (a frame "
                    f"folder), whitespace-separated, numbers as whole numbers, and no spaces in the path; "
                    f"got {line!r}"
                )
            folders = len(parts) == 3
            frames = int(parts[1]) if folders else None
            records.append(VideoRecord(parts[0], int(parts[-1]), (root / parts[0],), frames))
        if folders:
            kwargs.setdefault("backend", "frames")
        super().__init__(records, classes=classes, **kwargs)


DatasetFormat = Literal["kinetics", "ssv2", "ssv1", "list"]
DATASET_TYPES: dict[str, type[VideoDataset]] = {
    "kinetics": KineticsDataset,
    "ssv2": SomethingSomethingV2,
    "ssv1": SomethingSomethingV1,
    "list": VideoListDataset,
}


def detect_format(annotation: str | Path) -> str:
    """Guess the annotation format from the file: ``kinetics``, ``ssv2``, ``ssv1`` or ``list``."""
    path = Path(annotation)
    if path.suffix == ".json":
        return "ssv2"
    with open(path) as f:
        first = f.readline()
    if "youtube_id" in first:
        return "kinetics"
    if ";" in first or (path.suffix == ".csv" and len(first.split()) == 1):
        return "ssv1"
    return "list"


def build_dataset(
    annotation: str | Path, root: str | Path, labels: str | Path | None = None, format: str | None = None, **kwargs
) -> VideoDataset:
    """The dataset for an annotation file (format detected unless given); ``labels`` is the
    labels file of SSv1/SSv2 or Kinetics' optional label map; ``kwargs`` go to the dataset."""
    for what, path in (("annotation file", annotation), ("labels file", labels)):
        if path is not None and not Path(path).is_file():
            raise DataError(f"{what} {path} not found")
    fmt = format or detect_format(annotation)
    if fmt not in DATASET_TYPES:
        raise DataError(f"unknown dataset format {fmt!r}; valid formats: {', '.join(DATASET_TYPES)}")
    if fmt in ("ssv1", "ssv2"):
        if labels is None:
            raise DataError(f"{annotation}: the {fmt} format needs its labels file (data.labels / --labels)")
        return DATASET_TYPES[fmt](annotation, labels, root, **kwargs)
    if fmt == "kinetics":
        return KineticsDataset(annotation, root, label_map=labels, **kwargs)
    classes = read_label_list(labels) if labels else ()
    return VideoListDataset(annotation, root, classes=classes, **kwargs)
