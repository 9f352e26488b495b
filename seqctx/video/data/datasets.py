"""Video classification datasets: Kinetics, Something-Something v1/v2 and generic list files.

Each item is ``(views, label, meta)``: the transformed views ``(V, 3, T, H, W)`` (``V = 1`` in
training; clips x crops in multi-view testing), the class index (-1 when unlabelled) and a dict
with the video's ``id``, ``path`` and ``index``. The path of the data:
annotation -> index (:class:`~.index.VideoIndex`) -> video path (the data set's layout, found once)
-> sampler (clips of frame indices) -> ``read_frames`` -> transform; :func:`collate_clips` batches
items for the DataLoader.

Annotation files are read BOM-safe (``utf-8-sig``: what spreadsheet tools write).
"""

from __future__ import annotations

import csv
import json
import logging
import multiprocessing as mp
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from seqctx.errors import DataError

from .decode import VideoError, VideoSource
from .guarded import open_guarded
from .index import VideoIndex
from .sampling import Clips, build_sampler

log = logging.getLogger(__name__)

Sampler = Callable[..., Clips]  # sampler(num_frames, rng=generator) -> clips of frame indices
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov")
ON_ERROR = ("replace", "drop", "raise")
LOAD_ERRORS = (VideoError, OSError, RuntimeError, ValueError)
ENCODING = "utf-8-sig"  # annotation files: UTF-8 with or without a byte-order mark
LAYOUT_PROBES = 10  # videos tried, from the start of the list, to find a data set's layout


class VideoDataset(Dataset):
    """Shared machinery: where videos are, sampling, decoding, transforms and the ``on_error`` policy.

    A video's path is one of ``root / template / extension`` (:attr:`templates` x
    :attr:`extensions`, templates formatted with :meth:`fields`). The combination that holds
    the data set is found once, from its first videos (:meth:`find_layout`; ``check_found`` in
    the engine), and tried first for every video: one ``stat`` per item, the others only for a
    video that is not there.

    Args:
        index: the annotated videos (:class:`~.index.VideoIndex`).
        root: the folder the paths are relative to.
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
        backend: ``auto`` (folders: ``frames``; videos: the first installed of
            :data:`~.backends.AUTO_ORDER` that opens each), ``decord``, ``pyav``, ``torchcodec``
            or ``frames``.
        frame_template, first_frame: how frame folders name their files (``img_{:05d}.jpg``,
            1); found from each folder's files when None.
        classes: class names by index.
        decode_threads: decoding threads per video reader (decord, PyAV), in each DataLoader worker.
        short_side: decode frames with this shorter side (:func:`~.decode.open_video`); None: as stored.
        decode_timeout: seconds a video may take to open and decode before it counts as unreadable
            (:mod:`~.guarded`: decoding then runs in a helper process); None: no limit, in-process.
        seed: with :meth:`set_epoch`, makes each item's random sampling and augmentation a
            function of ``(seed, epoch, index)`` only: the same whatever the number of workers or
            processes, and exactly reproducible when a run resumes.
    """

    templates: tuple[str, ...] = ("{id}",)  # relative paths, tried in this order
    extensions: tuple[str, ...] = ("",)

    def __init__(
        self,
        index: VideoIndex,
        root: str | Path,
        sampler: Sampler | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        on_error: str = "replace",
        backend: str = "auto",
        classes: Sequence[str] = (),
        frame_template: str | None = None,
        first_frame: int | None = None,
        seed: int = 0,
        decode_threads: int = 1,
        short_side: int | None = None,
        decode_timeout: float | None = None,
    ) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.index = index
        self.root = str(root)
        self._layout: tuple[str, str] | None = None  # (template, extension) found by find_layout
        self.sampler = sampler or build_sampler("segments", train=False)
        self.transform = transform
        self.on_error = on_error
        self.backend = backend
        self.frame_template, self.first_frame = frame_template, first_frame
        self.decode_threads = decode_threads
        self.short_side, self.decode_timeout = short_side, decode_timeout
        self.classes = list(classes)
        self.seed = seed
        self._epoch = mp.Value("i", 0)  # shared with DataLoader workers, persistent ones too
        self._failures = mp.Value("i", 0)
        self._logged: set[str] = set()
        self.flip_pairs: dict[int, int] | None = None  # flip and swap these labels (left_right_pairs)

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
        return len(self.index)

    def fields(self, i: int) -> dict[str, str]:
        """The values :attr:`templates` are formatted with for video ``i``."""
        return {"id": self.index.ids[i]}

    def _relative(self, template: str, fields: dict[str, str]) -> str:
        """The template's path for ``fields``; empty fields drop out, and an absolute path (a list
        file's ``/data/x/v.mp4``) stays absolute, so that joining it to the root keeps it as given."""
        path = template.format(**fields)
        return ("/" if path.startswith("/") else "") + "/".join(part for part in path.split("/") if part)

    def _paths(self, i: int, first: tuple[str, str] | None = None) -> Iterator[tuple[tuple[str, str], str]]:
        """``((template, extension), path)`` for each place video ``i`` may be, ``first`` first,
        each path once."""
        fields, seen = self.fields(i), set()
        layouts = [(t, e) for t in self.templates for e in self.extensions]
        for layout in ([first] if first else []) + layouts:
            path = os.path.join(self.root, self._relative(layout[0], fields) + layout[1])
            if path not in seen:
                seen.add(path)
                yield layout, path

    def candidates(self, i: int) -> Iterator[str]:
        """The paths video ``i`` may have, the data set's layout first, each once."""
        return (path for _, path in self._paths(i, self._layout))

    def find_layout(self, count: int = LAYOUT_PROBES) -> bool:
        """Find the (template, extension) that holds the first of the first ``count`` videos that
        exists; False when none does. ``os.path.exists`` is False, not an error, for a name the
        file system cannot hold (too long)."""
        for i in range(min(count, len(self))):
            for layout, path in self._paths(i):
                if os.path.exists(path):
                    self._layout = layout
                    return True
        return False

    def path(self, i: int) -> Path:
        """Where video ``i`` is; :class:`VideoError` naming where it looked when it is nowhere."""
        tried = []
        for path in self.candidates(i):
            if os.path.exists(path):  # False for a name too long to exist
                return Path(path)
            tried.append(path)
        shown = ", ".join(tried[:3]) + (f", ... ({len(tried)} paths)" if len(tried) > 3 else "")
        raise VideoError(f"video {self.index.ids[i]!r} not found (looked for {shown})")

    def open(self, path: str | Path) -> VideoSource:
        """Video ``path`` opened with this data set's backend, threads, decode size and time limit."""
        return open_guarded(
            path, self.decode_timeout, backend=self.backend, num_threads=self.decode_threads,
            short_side=self.short_side, frame_template=self.frame_template, first_frame=self.first_frame,
        )  # fmt: skip

    def load(self, index: int, copy: int = 0) -> tuple[torch.Tensor, int, dict[str, object]]:
        """Item ``index`` with no error policy: raises :class:`VideoError`. Every frame of its
        clips is decoded once. A one-clip item transforms its distinct frames once and repeats
        frames after (where a short video repeats them); each clip of a multi-clip item is
        gathered only while it is transformed (a 10-clip test item holds its decoded frames, one
        clip and the views, never a second copy).
        ``copy``: repeated augmentation's copy number, drawing other clips and augmentations. With
        ``flip_pairs``, half the items are flipped and their label swapped with its pair."""
        path = self.path(index)
        source = self.open(path)  # opened here, in the worker
        rng = np.random.default_rng([self.seed, self.epoch, index] + ([copy] if copy else []))
        clips = self.sampler(source.num_frames, rng=rng)
        unique = source.unique([i for clip in clips for i in clip])
        frames = source.decode(unique)  # (U, H, W, 3)
        position = {frame: i for i, frame in enumerate(unique)}
        views = []
        with torch.random.fork_rng(devices=[]):  # torchvision's transforms draw from torch's RNG
            torch.default_generator.manual_seed(int(rng.integers(2**62)))  # the CPU's alone: 0.6 ms less
            if len(clips) == 1 and self.transform is not None:
                # One clip: its distinct frames transformed once (each transform is per frame, with one
                # draw per clip), then repeated where the clip repeats them (short videos).
                rows = [position[i] for i in clips[0]]
                views.append(_take(self.transform(frames), rows, dim=2))  # (V, 3, T, H, W)
            else:
                for clip in clips:
                    x = _take(frames, [position[i] for i in clip])  # (T, H, W, 3)
                    views.append(self.transform(x) if self.transform is not None else x.unsqueeze(0))
        out = views[0] if len(views) == 1 else torch.cat(views)  # (V, 3, T, H, W): clips x crops
        label = int(self.index.labels[index])
        if self.flip_pairs is not None and rng.random() < 0.5:
            out, label = out.flip(-1), self.flip_pairs.get(label, label)
        meta = {"id": self.index.ids[index], "path": str(path), "index": index}
        return out, label, meta

    def _count_failure(self, index: int, error: Exception, action: str) -> None:
        with self._failures.get_lock():
            self._failures.value += 1
        key = self.index.ids[index]
        if key not in self._logged:
            self._logged.add(key)
            log.warning("%s video %s: %s", action, key, error)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, int, dict[str, object]]:
        """Item ``index``; an index past the end is a repeated-augmentation copy (``index + copy *
        len(self)``, :class:`~seqctx.video.engine.builders.EpochSampler`)."""
        copy, index = divmod(index, len(self))
        if self.on_error == "raise":
            return self.load(index, copy)
        if self.on_error == "drop":
            try:
                return self.load(index)
            except LOAD_ERRORS as e:
                self._count_failure(index, e, "leaving out")
                label = int(self.index.labels[index])
                return None, label, {"id": self.index.ids[index], "path": "", "index": index, "error": str(e)}
        errors = []
        for attempt in range(min(len(self), 20)):
            j = (index + attempt * 7919) % len(self)  # deterministic replacement
            try:
                return self.load(j, copy)
            except LOAD_ERRORS as e:
                self._count_failure(j, e, "replacing")
                errors.append(f"{self.index.ids[j]}: {e}")
        raise VideoError(
            f"{len(errors)} videos in a row failed to load, starting at item {index} ({'; '.join(errors[:3])}"
            f"{'; ...' if len(errors) > 3 else ''}); check the data set (seqctx data check)"
        )

    def check_found(self, count: int = LAYOUT_PROBES) -> None:
        """Find the layout (:meth:`find_layout`); raise :class:`DataError` when none of the first
        ``count`` videos exists: a wrong ``root`` (or annotation) found before any work starts,
        the message says where it looked."""
        if self.find_layout(count):
            return
        fields = self.fields(0)
        looked = "; ".join(dict.fromkeys(os.path.join(self.root, self._relative(t, fields)) for t in self.templates))
        raise DataError(
            f"none of the first {min(count, len(self))} videos of the annotation file exists (for the first, "
            f"looked for {looked}, with extensions {', '.join(e or '(none)' for e in self.extensions)}); "
            "check data.root and the annotation file"
        )

    def shuffled(self, generator: torch.Generator) -> list[int]:
        """An epoch's order when shuffling, drawn from ``generator``: a permutation of the items."""
        return torch.randperm(len(self), generator=generator).tolist()

    def max_label(self) -> int:
        """The largest class index in the annotations (-1 when nothing is labelled)."""
        return int(self.index.labels.max())


def _take(frames: torch.Tensor, rows: list[int], dim: int = 0) -> torch.Tensor:
    """``frames``' ``rows`` along ``dim``: a view for consecutive rows (dense clips), else one
    gathered clip."""
    if rows == list(range(rows[0], rows[0] + len(rows))):
        return frames.narrow(dim, rows[0], len(rows))
    return frames.index_select(dim, torch.tensor(rows))


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
    return [line.strip() for line in Path(path).read_text(encoding=ENCODING).splitlines() if line.strip()]


def _class_lookup(classes: Sequence[str], origin: str) -> Callable[[str, str], int]:
    """``lookup(label, where) -> index`` in ``classes``; a name not in it raises :class:`DataError`
    naming the label, ``where`` it was read (file and line) and where the class list came from."""
    position = {name: i for i, name in enumerate(classes)}

    def lookup(label: str, where: str) -> int:
        if label not in position:
            raise DataError(
                f"{where}: label {label!r} is not in {origin} ({len(classes)} classes); a run uses one class list "
                "for every split"
            )
        return position[label]

    return lookup


class KineticsDataset(VideoDataset):
    """Kinetics-400/600/700 from the official CSV (``label,youtube_id,time_start,time_end,split
    [,is_cc]``); the video of a row is ``{id} = {youtube_id}_{start:06d}_{end:06d}`` in one of the
    layouts of :attr:`templates` (``{root}/{split}/{label}/{id}``, ``{root}/{split}/{id}``,
    ``{root}/{label}/{id}``, ``{root}/{id}``, ``{root}/{youtube_id}``), any extension decord opens.

    Class indices: positions in ``classes`` (the run's list, as a checkpoint saved it), else in
    ``label_map``, else in the sorted label names of this file (a training annotation). A label
    outside the list is a :class:`DataError` naming it and its line."""

    templates = ("{split}/{label}/{id}", "{split}/{id}", "{label}/{id}", "{id}", "{youtube_id}")
    extensions = VIDEO_EXTENSIONS

    def __init__(
        self, csv_file: str | Path, root: str | Path, label_map: str | Path | None = None,
        classes: Sequence[str] | None = None, **kwargs,
    ) -> None:  # fmt: skip
        with open(csv_file, newline="", encoding=ENCODING) as f:
            reader = csv.reader(f)
            header = next(reader, [])
            numbered = [(reader.line_num, row) for row in reader]
        rows = [row for _, row in numbered if any(cell.strip() for cell in row)]  # blank lines are skipped
        line_numbers = [n for n, row in numbered if any(cell.strip() for cell in row)]
        if len(rows) < len(numbered):
            log.info("%s: %d blank lines skipped", csv_file, len(numbered) - len(rows))
        columns = {name: i for i, name in enumerate(header)}
        if not {"youtube_id", "time_start", "time_end"} <= set(columns):
            raise DataError(
                f"{csv_file}: expected the Kinetics columns label,youtube_id,time_start,time_end,split; "
                f"the header is {','.join(header)!r}"
            )
        yid, start, end = columns["youtube_id"], columns["time_start"], columns["time_end"]
        lab, split = columns.get("label"), columns.get("split")
        for n, r in zip(line_numbers, rows, strict=True):
            if len(r) < len(header):
                raise DataError(f"{csv_file}, line {n}: {len(r)} fields where the header has {len(header)} "
                                f"({','.join(header)}); got {','.join(r)!r}")  # fmt: skip
            try:
                float(r[start]), float(r[end])
            except ValueError:
                raise DataError(f"{csv_file}, line {n}: time_start and time_end must be numbers, got "
                                f"{r[start]!r} and {r[end]!r}") from None  # fmt: skip
        if classes:
            classes, origin = list(classes), "the run's class list"
        elif label_map:
            classes, origin = read_label_list(label_map), f"the label map {label_map}"
        else:
            classes, origin = sorted({r[lab] for r in rows if lab is not None and r[lab]}), f"the labels of {csv_file}"
        lookup = _class_lookup(classes, origin)
        ids, labels, splits = [], [], []
        for n, r in zip(line_numbers, rows, strict=True):
            ids.append(f"{r[yid]}_{int(float(r[start])):06d}_{int(float(r[end])):06d}")
            labels.append(lookup(r[lab], f"{csv_file}, line {n}") if lab is not None and r[lab] else -1)
            splits.append(r[split] if split is not None else "")
        index = VideoIndex(ids, labels, groups=splits, source=csv_file, lines=line_numbers)
        super().__init__(index, root, classes=classes, **kwargs)

    def fields(self, i: int) -> dict[str, str]:
        vid, label = self.index.ids[i], int(self.index.labels[i])
        return {"id": vid, "youtube_id": vid.rsplit("_", 2)[0], "split": self.index.group(i),
                "label": self.classes[label] if label >= 0 else ""}  # fmt: skip


def ssv2_template(template: str) -> str:
    """The labels-file key of an SSv2 template: ``[`` and ``]`` removed."""
    return template.replace("[", "").replace("]", "")


def _read_json(path: str | Path) -> object:
    try:
        return json.loads(Path(path).read_text(encoding=ENCODING))
    except json.JSONDecodeError as e:
        raise DataError(f"{path} is not valid JSON: {e}") from None


class SomethingSomethingV2(VideoDataset):
    """Something-Something v2: the official JSON (``id``, ``label``, ``template``,
    ``placeholders``; the test JSON has ``id`` only), the labels JSON (``template -> "index"``)
    and videos ``{root}/{id}.webm`` (or ``.mp4``)."""

    extensions = (".webm", ".mp4")

    def __init__(self, json_file: str | Path, labels_file: str | Path, root: str | Path, **kwargs) -> None:
        label_ids = {k: int(v) for k, v in _read_json(labels_file).items()}  # type: ignore[union-attr]
        classes = [""] * len(label_ids)
        for name, i in label_ids.items():
            classes[i] = name
        ids, labels = [], []
        for entry in _read_json(json_file):  # type: ignore[union-attr]
            if "template" in entry:
                key = ssv2_template(entry["template"])
                if key not in label_ids:
                    raise DataError(f"{json_file}: template {key!r} of video {entry['id']} is not in {labels_file}")
                labels.append(label_ids[key])
            else:
                labels.append(-1)
            ids.append(str(entry["id"]))
        super().__init__(VideoIndex(ids, labels, source=json_file), root, classes=classes, **kwargs)


class SomethingSomethingV1(VideoDataset):
    """Something-Something v1: CSV lines ``id;label`` (test: ``id``), the labels CSV (one class
    name per line) and JPEG frame folders ``{root}/{id}/00001.jpg``."""

    def __init__(self, csv_file: str | Path, labels_file: str | Path, root: str | Path, **kwargs) -> None:
        classes = read_label_list(labels_file)
        lookup = _class_lookup(classes, f"the labels file {labels_file}")
        ids, labels, lines = [], [], []
        for n, line in enumerate(Path(csv_file).read_text(encoding=ENCODING).splitlines(), 1):
            if not line.strip():
                continue
            vid, _, name = line.strip().partition(";")
            ids.append(vid)
            labels.append(lookup(name, f"{csv_file}, line {n}") if name else -1)
            lines.append(n)
        if kwargs.setdefault("backend", "frames") not in ("frames", "auto"):
            raise DataError(f"{csv_file}: Something-Something v1 is JPEG frame folders: the backend is 'frames', "
                            f"not {kwargs['backend']!r}")  # fmt: skip
        super().__init__(VideoIndex(ids, labels, source=csv_file, lines=lines), root, classes=classes, **kwargs)


class VideoListDataset(VideoDataset):
    """The TSM list format: ``path label`` (videos) or ``path num_frames label`` (frame folders),
    paths relative to ``root`` (absolute ones as given); so any other data set works. With
    ``classes`` (the run's list, or ``data.labels``), a label outside it is a :class:`DataError`
    naming the file and line."""

    def __init__(self, list_file: str | Path, root: str | Path, classes: Sequence[str] = (), **kwargs) -> None:
        ids, labels, frames, lines = [], [], [], []
        for n, line in enumerate(Path(list_file).read_text(encoding=ENCODING).splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts[1:]):
                raise DataError(
                    f"{list_file}, line {n}: expected 'path label' (a video) or 'path num_frames label' (a frame "
                    f"folder), whitespace-separated, numbers as whole numbers, and no spaces in the path; "
                    f"got {line!r}"
                )
            if classes and int(parts[-1]) >= len(classes):
                raise DataError(
                    f"{list_file}, line {n}: label {parts[-1]} is outside the class list ({len(classes)} classes, "
                    f"0 to {len(classes) - 1}); a run uses one class list for every split"
                )
            ids.append(parts[0])
            labels.append(int(parts[-1]))
            frames.append(int(parts[1]) if len(parts) == 3 else -1)
            lines.append(n)
        folders = bool(frames) and frames[-1] >= 0
        backend = kwargs.setdefault("backend", "auto")
        if backend != "auto" and folders != (backend == "frames"):
            kind = "frame folders ('path num_frames label')" if folders else "videos ('path label')"
            raise DataError(
                f"{list_file} lists {kind}, but the backend is {backend!r}: use "
                f"{'frames' if folders else 'a video decoder (decord, pyav, torchcodec)'}, or leave it unset"
            )
        index = VideoIndex(ids, labels, frames, source=list_file, lines=lines)
        super().__init__(index, root, classes=classes, **kwargs)


DatasetFormat = Literal["kinetics", "ssv2", "ssv1", "list", "shards"]
DATASET_TYPES: dict[str, type[VideoDataset]] = {  # "shards": added by .shards (it builds on VideoDataset)
    "kinetics": KineticsDataset,
    "ssv2": SomethingSomethingV2,
    "ssv1": SomethingSomethingV1,
    "list": VideoListDataset,
}


def detect_format(annotation: str | Path) -> str:
    """Guess the annotation format from the file: ``kinetics``, ``ssv2``, ``ssv1``, ``list``, or
    ``shards`` (a URL, or a JSON object written by ``data prepare --shards``)."""
    if "://" in str(annotation):
        return "shards"
    path = Path(annotation)
    with open(path, encoding=ENCODING) as f:
        first = f.readline()
    if path.suffix == ".json":
        return "shards" if first.lstrip().startswith("{") else "ssv2"
    if "youtube_id" in first:
        return "kinetics"
    if ";" in first or (path.suffix == ".csv" and len(first.split()) == 1):
        return "ssv1"
    return "list"


def left_right_pairs(classes: Sequence[str]) -> dict[int, int]:
    """The classes a horizontal flip turns into each other: names that differ only by the words
    "left" and "right" swapped (whole words: "upright" is no pair), both ways. On SSv2's labels:
    86<->87, 93<->94, 166<->167 (pulling/pushing from left to right, turning the camera left),
    mmaction2's flip label map for SSv2."""
    swap = {"left": "right", "right": "left", "Left": "Right", "Right": "Left"}
    index = {name: i for i, name in enumerate(classes)}
    pairs = {}
    for i, name in enumerate(classes):
        turned = re.sub(r"\b(left|right|Left|Right)\b", lambda m: swap[m[0]], name)
        if turned != name and turned in index:
            pairs[i] = index[turned]
    return pairs


def build_dataset(
    annotation: str | Path, root: str | Path, labels: str | Path | None = None, format: str | None = None,
    classes: Sequence[str] | None = None, **kwargs,
) -> VideoDataset:  # fmt: skip
    """The dataset for an annotation file (format detected unless given); ``labels`` is the
    labels file of SSv1/SSv2 or Kinetics' optional label map; ``classes`` the run's class list
    (Kinetics' label indices; the names of a list file's labels), when the run has decided it;
    ``kwargs`` go to the dataset. A shard index (``shards``) may be a URL; ``root`` and
    ``labels`` are unused there (the shards lie beside their index, which holds the class list)."""
    remote = "://" in str(annotation)
    if not remote and not Path(annotation).is_file():
        raise DataError(f"annotation file {annotation} not found")
    fmt = format or detect_format(annotation)
    if fmt not in DATASET_TYPES:
        raise DataError(f"unknown dataset format {fmt!r}; valid formats: {', '.join(DATASET_TYPES)}")
    if fmt == "shards":  # the index carries its class list (OUT/classes.txt): ``labels`` is not read
        return DATASET_TYPES[fmt](str(annotation), classes=classes or (), **kwargs)  # type: ignore[call-arg]
    if labels is not None and not Path(labels).is_file():
        raise DataError(f"labels file {labels} not found")
    if remote:
        raise DataError(f"{annotation}: only a shard index (data.format: shards) is read from a URL; copy the "
                        "annotation file to this machine")  # fmt: skip
    if fmt in ("ssv1", "ssv2"):
        if labels is None:
            raise DataError(f"{annotation}: the {fmt} format needs its labels file (data.labels / --labels)")
        return DATASET_TYPES[fmt](annotation, labels, root, **kwargs)
    if fmt == "kinetics":
        return KineticsDataset(annotation, root, label_map=labels, classes=classes, **kwargs)
    names = classes or (read_label_list(labels) if labels else ())
    return VideoListDataset(annotation, root, classes=names, **kwargs)
