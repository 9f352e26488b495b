"""WebDataset shards of prepared clips: written by ``seqctx data prepare --shards``, read as a data
set (``data.format: shards``) from a folder or any URL fsspec opens (``s3://``, ``gs://``,
``https://``).

**Layout.** ``OUT/shards/<split>/`` holds ``<split>-000000.tar``, ... and ``index.json``
(``<split>``: the annotation's file name without its suffix). A shard is a tar in WebDataset's
layout, so that ``webdataset.WebDataset`` reads it too: sample ``k`` is the members
``<key>.mp4`` (the prepared clip's bytes, as ``data prepare`` wrote them) and ``<key>.json``
(``id``, ``label`` (the class name, null when unlabelled), ``frames``, ``fps``), with ``<key>``
the sample's number (``%08d``); members are written in sample order with a fixed time stamp,
so the same clips give the same bytes. Shards are cut at ``shard_size`` bytes of clips (a shard
holds at least one).

**The index** (``index.json``) makes the epoch, the class list and every sample's place known
without listing a bucket: ``{"format": "seqctx-shards", "version": 1, "classes": [...],
"settings": {...}, "shards": [{"name", "samples", "bytes"}], "samples": {"id": [...], "label":
[...], "frames": [...], "fps": [...], "shard": [...], "offset": [...], "size": [...]}}``,
columns of one entry per sample; ``offset``/``size`` locate the sample's video bytes in its shard,
whose ``name`` is relative to the index.

**Reading.** A sample's video is one ranged read of its shard (``offset``, ``size``; one request
for an object store, fsspec's ``cat_file``), retried a bounded number of times where a retry can
help, and decoded from memory by any backend. Samples, not shards, are dealt to ranks and loader
workers (by :class:`~seqctx.video.engine.builders.EpochSampler`, as files are), so uneven shards
and more readers than shards can neither repeat nor drop a sample, and a resume on any number of
processes continues with exactly the unseen samples.

**The epoch's order** (:meth:`ShardDataset.shuffled`): the shards in an order drawn from the
epoch's generator, their samples in stored order, then shuffled within consecutive windows of
``shuffle_buffer`` samples (WebDataset's shuffle buffer, made deterministic: a sample moves at
most ``shuffle_buffer - 1`` places). The readers of all ranks work through the same few shards at
a time, in order.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import re
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqctx.errors import DataError

from .backends.base import Blob, VideoError
from .datasets import DATASET_TYPES, VideoDataset
from .index import VideoIndex

log = logging.getLogger(__name__)

FORMAT, VERSION = "seqctx-shards", 1
INDEX_FILE = "index.json"
RETRIES = 3  # attempts of a ranged read that failed for a reason a retry can mend (a network error)
COLUMNS = ("id", "label", "frames", "fps", "shard", "offset", "size")
DTYPES = {"label": np.int32, "frames": np.int32, "fps": np.float32, "shard": np.int32, "offset": np.int64,
          "size": np.int64}  # fmt: skip
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``"500M"``, ``"1G"``, ``"100K"``, ``"1.5G"``, ``"4096"`` -> bytes (binary multiples: K = 1024);
    a ``ValueError`` naming the text otherwise."""
    match = _SIZE.match(text)
    if not match or float(match[1]) <= 0:
        raise ValueError(f"a size is a positive number of bytes with an optional suffix K, M, G or T (e.g. 500M, "
                         f"1G); got {text!r}")  # fmt: skip
    return int(float(match[1]) * 1024 ** " KMGT".index(match[2].upper() or " "))


@dataclass
class ShardIndex:
    """The contents of ``index.json`` (see the module): ``url`` is where it was read from, the
    shards' names are relative to its folder."""

    url: str
    classes: list[str]
    settings: dict[str, Any]
    shards: list[dict[str, Any]]
    samples: dict[str, Any]  # COLUMNS: "id" a sequence of strings, the others arrays of DTYPES

    @classmethod
    def load(cls, url: str) -> ShardIndex:
        """The index at ``url`` (a path or any URL fsspec opens); a :class:`DataError` naming it
        when it cannot be read or is not a shard index."""
        import fsspec

        try:
            with fsspec.open(url, "rt", encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise DataError(f"shard index {url} not found") from None
        except json.JSONDecodeError as e:
            raise DataError(f"{url}: not a shard index (invalid JSON: {e})") from None
        except Exception as e:  # network, credentials (botocore's own errors), a protocol fsspec lacks
            raise DataError(f"{url}: cannot read the shard index: {type(e).__name__}: {e}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise DataError(f"{url}: not a shard index (no \"format\": \"{FORMAT}\"); write one with "
                            "`seqctx data prepare ... --shards`")  # fmt: skip
        if data.get("version") != VERSION:
            raise DataError(f"{url}: shard index version {data.get('version')!r}; this seqctx reads version {VERSION}")
        columns = data["samples"]
        samples: dict[str, Any] = {"id": columns["id"]}
        for name in COLUMNS[1:]:
            samples[name] = np.asarray(columns[name], dtype=DTYPES[name])
        return cls(url, list(data["classes"]), dict(data["settings"]), list(data["shards"]), samples)

    def to_json(self) -> dict[str, Any]:
        columns = {name: [int(v) for v in self.samples[name]] for name in COLUMNS[1:] if name != "fps"}
        columns["fps"] = [round(float(v), 3) for v in self.samples["fps"]]  # float32 in memory
        return {
            "format": FORMAT, "version": VERSION, "classes": self.classes, "settings": self.settings,
            "shards": self.shards, "samples": {"id": list(self.samples["id"]), **columns},
        }  # fmt: skip

    def __len__(self) -> int:
        return len(self.samples["id"])

    def shard_url(self, shard: int) -> str:
        """Where shard ``shard`` is: its name beside the index (a URL stays a URL)."""
        return posixpath.join(posixpath.dirname(self.url), self.shards[shard]["name"])


def epoch_order(shard_sizes: Sequence[int], generator: torch.Generator, buffer: int) -> list[int]:
    """The sample numbers of an epoch: the shards in the order ``torch.randperm(len(shard_sizes),
    generator)``, each shard's samples in stored order (samples are numbered shard after shard),
    then each consecutive window of ``buffer`` samples permuted by the next draws of
    ``generator`` (``buffer <= 1``: no window shuffle)."""
    starts = np.concatenate([[0], np.cumsum(shard_sizes)])
    stream = np.concatenate(
        [np.arange(starts[s], starts[s + 1]) for s in torch.randperm(len(shard_sizes), generator=generator).tolist()]
    )
    if buffer > 1:
        for begin in range(0, len(stream), buffer):
            window = stream[begin : begin + buffer]
            stream[begin : begin + len(window)] = window[torch.randperm(len(window), generator=generator).numpy()]
    return stream.tolist()


class ShardDataset(VideoDataset):
    """The samples of a shard index (``data.format: shards``; the annotation is the index's path
    or URL), decoded from memory: a :class:`VideoDataset` in everything else (sampling,
    transforms, ``on_error``; a shard that is missing or cut short fails its samples, each named,
    and the policy decides).

    Class indices: the index's class list, or the run's ``classes`` (a checkpoint's, or the
    training set's), by name. ``shuffle_buffer``: the window of :func:`epoch_order`."""

    def __init__(self, index_url: str, classes: Sequence[str] = (), shuffle_buffer: int = 1000, **kwargs: Any) -> None:
        shards = ShardIndex.load(str(index_url))
        labels = shards.samples["label"]
        if classes and list(classes) != shards.classes:
            position = {name: i for i, name in enumerate(classes)}
            missing = sorted({shards.classes[k] for k in labels if k >= 0 and shards.classes[k] not in position})
            if missing:
                raise DataError(f"{index_url}: classes {missing[:3]} are not in the run's class list ({len(classes)} "
                                "classes); a run uses one class list for every split")  # fmt: skip
            labels = np.asarray([position[shards.classes[k]] if k >= 0 else -1 for k in labels], np.int32)
        if kwargs.get("backend") == "frames":
            raise DataError(f"{index_url}: shards hold video files; read them with a video backend, not frames")
        index = VideoIndex(shards.samples["id"], labels, shards.samples["frames"], source=index_url)
        shards.samples["id"] = index.ids  # held once, in the index's string table
        super().__init__(index, posixpath.dirname(shards.url), classes=list(classes) or shards.classes, **kwargs)
        self.shards, self.shuffle_buffer = shards, shuffle_buffer
        self._fs: Any = None  # the file system of the shards, made in each process that reads
        self._base, self._pid = "", 0  # the index's folder in that file system; the process it was made in

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_fs": None, "_base": "", "_pid": 0}  # each process makes its own (s3fs: not fork-safe)

    def file_system(self) -> tuple[Any, str]:
        """``(fs, path of the index's folder)`` for this process."""
        import fsspec.core

        if self._fs is None or self._pid != os.getpid():
            self._fs, self._base = fsspec.core.url_to_fs(self.shards.url)
            self._base, self._pid = posixpath.dirname(self._base), os.getpid()
        return self._fs, self._base

    def find_layout(self, count: int = 0) -> bool:
        """Whether the first shard is where the index says (the layout of files has no meaning here)."""
        fs, base = self.file_system()
        return bool(fs.exists(posixpath.join(base, self.shards.shards[0]["name"])))

    def check_found(self, count: int = 0) -> None:
        if not self.find_layout():
            raise DataError(f"{self.shards.shard_url(0)}: the first shard of {self.shards.url} is not there; upload "
                            "the shards beside their index.json")  # fmt: skip

    def path(self, i: int) -> Blob:  # type: ignore[override]
        """Sample ``i``'s video read from its shard: one ranged read of ``size`` bytes at ``offset``."""
        s = self.shards.samples
        shard, offset, size = int(s["shard"][i]), int(s["offset"][i]), int(s["size"][i])
        url = self.shards.shard_url(shard)
        name = f"{url}#{self.index.ids[i]}"
        fs, base = self.file_system()
        path = posixpath.join(base, self.shards.shards[shard]["name"])
        for attempt in range(RETRIES):
            try:
                data = fs.cat_file(path, start=offset, end=offset + size)
                break
            except FileNotFoundError:
                raise VideoError(f"{name}: shard {url} not found") from None
            except Exception as e:  # a network error (OSError, botocore's, aiohttp's): retried, then the sample fails
                if attempt == RETRIES - 1:
                    raise VideoError(f"{name}: reading shard {url} failed {RETRIES} times: {e}") from e
                log.warning("reading %s failed (%s); retrying", url, e)
                time.sleep(0.5 * 2**attempt)
        if len(data) != size:
            raise VideoError(f"{name}: shard {url} is cut short (the sample is bytes {offset}..{offset + size}, "
                             f"{len(data)} of {size} read)")  # fmt: skip
        return Blob(name, data)

    def shuffled(self, generator: torch.Generator) -> list[int]:
        """The epoch's order when shuffling: :func:`epoch_order` over this index's shards."""
        return epoch_order([int(shard["samples"]) for shard in self.shards.shards], generator, self.shuffle_buffer)


DATASET_TYPES["shards"] = ShardDataset


def _fps(path: Path) -> float:
    import av

    with av.open(str(path)) as container:
        rate = container.streams.video[0].average_rate
    return float(rate) if rate else 0.0


def _members(path: Path) -> list[tuple[str, int, int]]:
    """``(name, data offset, size)`` of a tar's members, read from their headers."""
    with tarfile.open(path) as tar:
        return [(m.name, m.offset_data, m.size) for m in tar.getmembers()]


def write_shards(
    samples: Sequence[tuple[str, int, Path, int]],
    folder: Path,
    name: str,
    shard_size: int,
    classes: Sequence[str],
    settings: dict[str, Any],
) -> ShardIndex:
    """Pack prepared clips into shards and write ``folder/index.json``. ``samples``: ``(id,
    label, clip path, frames)`` in the annotation's order (label an index into ``classes``).
    Deterministic; resumable (a shard already there holding exactly its planned members is kept;
    each is written under a temporary name and renamed when complete; the index comes last)."""
    import webdataset as wds
    from tqdm import tqdm

    if shard_size < 1:
        raise DataError(f"--shard-size must be a positive number of bytes, got {shard_size}")
    folder.mkdir(parents=True, exist_ok=True)
    plan: list[list[int]] = [[]]
    payload = 0
    for k, (_, _, clip, _) in enumerate(samples):
        size = clip.stat().st_size
        if plan[-1] and payload + size > shard_size:
            plan.append([])
            payload = 0
        plan[-1].append(k)
        payload += size
    columns: dict[str, list[Any]] = {column: [] for column in COLUMNS}
    shards = []
    for number, members in enumerate(tqdm(plan, desc="writing shards")):
        shard = folder / f"{name}-{number:06d}.tar"
        meta, encoded = {}, {}
        for k in members:
            vid, label, clip, frames = samples[k]
            meta[k] = {"id": vid, "label": classes[label] if label >= 0 else None, "frames": frames, "fps": _fps(clip)}
            encoded[k] = json.dumps(meta[k], sort_keys=True).encode()
        wanted = [(f"{k:08d}.{ext}", size) for k in members
                  for ext, size in (("json", len(encoded[k])), ("mp4", samples[k][2].stat().st_size))]  # fmt: skip
        if not (shard.is_file() and [(n, s) for n, _, s in _members(shard)] == wanted):
            partial = shard.with_name(shard.name + ".partial")
            try:
                with open(partial, "wb") as f, wds.TarWriter(f, mtime=0, user="seqctx", group="seqctx") as tar:
                    for k in members:
                        tar.write({"__key__": f"{k:08d}", "mp4": samples[k][2].read_bytes(), "json": encoded[k]})
            except BaseException:  # a stop or an error: no partial shard stays behind
                partial.unlink(missing_ok=True)
                raise
            partial.replace(shard)
        where = {n: (offset, size) for n, offset, size in _members(shard)}
        for k in members:
            offset, size = where[f"{k:08d}.mp4"]
            for column, value in (
                ("id", meta[k]["id"]),
                ("label", samples[k][1]),
                ("frames", meta[k]["frames"]),
                ("fps", meta[k]["fps"]),
                ("shard", number),
                ("offset", offset),
                ("size", size),
            ):
                columns[column].append(value)  # fmt: skip
        shards.append({"name": shard.name, "samples": len(members), "bytes": shard.stat().st_size})
    stale = {p.name for p in folder.glob(f"{name}-*.tar")} - {s["name"] for s in shards}
    for old in sorted(stale):  # shards of an earlier, longer plan
        (folder / old).unlink()
    arrays = {c: (v if c == "id" else np.asarray(v, DTYPES[c])) for c, v in columns.items()}
    index = ShardIndex(str(folder / INDEX_FILE), list(classes), settings, shards, arrays)
    tmp = folder / (INDEX_FILE + ".partial")
    tmp.write_text(json.dumps(index.to_json(), separators=(",", ":")), encoding="utf-8")
    tmp.replace(folder / INDEX_FILE)
    return index
