"""``seqctx data prepare``: the one-time conversion before training on a downloaded data set.

Every video of an annotation is decoded once, in order (exact; PyAV, which reads whatever FFmpeg
does, or the frame folders of SSv1), in its displayed orientation,
scaled to a short side (:func:`~.decode.scaled_size`: the long side rounded to an even number,
as H.264's 4:2:0 needs), and written as

* H.264 MP4 (``libx264``, ``crf``, a keyframe every ``keyint`` frames: seeking is most of a
  sparse sampler's cost, and a downloaded video has one every few seconds), no audio, the
  frames re-timed at the source's average rate (the frame count and order are kept: frame ``i``
  of the copy is frame ``i`` of the source); or
* with ``frames=True``, a folder of JPEG frames ``00001.jpg``... (the layout the ``frames``
  backend reads, as Something-Something v1 ships).

Outputs keep the source's relative path under ``out`` (the suffix becomes ``.mp4``, or the
suffix is dropped for a frame folder). Kinetics and SSv2 annotations find the ``.mp4`` copies
as they are (``data.root=OUT``); for a list file, and for frame folders, an annotation for
``out`` is written (:func:`write_annotation`).

Resumable and safe: each output is written under a temporary name and renamed when complete,
and recorded with its frame count in ``OUT/prepare_done.tsv``; a rerun skips the outputs that are
whole (recorded, and holding that many frames) and replaces others. The settings (short side,
keyframe interval, CRF, format) are stored in ``OUT/prepare_settings.json``: a rerun into ``OUT``
with other settings is refused, naming them (the copies would mix). One prepare at a time writes
into ``OUT`` (a lock). The sources are only read.

Real data sets: the copy holds every frame that decodes. A source whose container announces
more frames than decode (HMDB51's AVIs over-report by one; a clip cut with ``ffmpeg -ss -c copy``
counts the packets before its edit list) is converted and noted, not failed. A source smaller
than the short side is copied at its own size (never upscaled) and noted. Two sources that map to
one output are refused before any work. One class list for every split: ``OUT/classes.txt`` is
written by the first split and reused (and checked) by the next.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TextIO

from seqctx.errors import DataError

from .backends.frames import FrameFolderSource
from .backends.pyav import PyAVSource
from .datasets import LOAD_ERRORS, VideoDataset
from .decode import VideoError
from .shards import ShardIndex, write_shards

FAILURES_FILE = "prepare_failures.txt"
SETTINGS_FILE = "prepare_settings.json"
DONE_FILE = "prepare_done.tsv"  # output path relative to OUT <TAB> frames
JPEG_QUALITY = 90


@dataclass(frozen=True)
class Task:
    id: str
    source: str  # "" when the video was not found
    output: str
    reason: str = ""
    done_frames: int = -1  # the frames a finished output holds, as recorded by an earlier run


@dataclass
class Outcome:
    id: str
    status: str  # converted | skipped | failed
    reason: str = ""
    bytes_before: int = 0
    bytes_after: int = 0
    num_frames: int = 0
    note: str = ""  # what differs from the source, for a converted video


@dataclass
class PrepareReport:
    converted: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (id, reason)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (id, note)
    bytes_before: int = 0
    bytes_after: int = 0
    annotation: str = ""  # the annotation written for OUT, when one was needed
    unlabelled: int = 0  # prepared videos left out of that annotation (no label: a test split)
    shards: str = ""  # the shard index written (--shards)
    shard_count: int = 0

    def add(self, outcome: Outcome) -> None:
        if outcome.status == "failed":
            self.failed.append((outcome.id, outcome.reason))
            return
        if outcome.note:
            self.notes.append((outcome.id, outcome.note))
        self.converted += outcome.status == "converted"
        self.skipped += outcome.status == "skipped"
        self.bytes_before += outcome.bytes_before
        self.bytes_after += outcome.bytes_after

    def summary(self) -> str:
        gib = 2**30
        lines = [
            f"{self.converted} converted, {self.skipped} skipped (already done), {len(self.failed)} failed; "
            f"{self.bytes_before / gib:.2f} GiB of sources -> {self.bytes_after / gib:.2f} GiB"
        ]
        for kind, entries in (("failed", self.failed), ("note", self.notes)):
            lines += [f"  {kind} {vid}: {reason}" for vid, reason in entries[:20]]
            if len(entries) > 20:
                lines.append(f"  ... {len(entries) - 20} more {kind}")
        if self.annotation:
            lines.append(f"annotation for the prepared videos: {self.annotation}")
        if self.shards:
            lines.append(f"{self.shard_count} shards and their index: {self.shards}")
        if self.unlabelled:
            lines.append(
                f"{self.unlabelled} prepared videos have no label and are not in "
                f"{'them' if self.shards and not self.annotation else 'it'} (train reads labels)"
            )
        return "\n".join(lines)


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir()) if path.is_dir() else path.stat().st_size


def _source_frames(path: str, backend: str, short_side: int) -> tuple[Iterator, int, Fraction, str]:
    """``(frames, count, rate, note)``: every frame in order, displayed and scaled to
    ``short_side`` (uint8 ``(H, W, 3)``), or at its own size (noted) when smaller; ``count`` is
    what the source announces."""
    if backend == "frames" or Path(path).is_dir():
        folder: FrameFolderSource | PyAVSource = FrameFolderSource(path)
        height, width = folder.decode([0]).shape[1:3]
    else:
        folder = PyAVSource(path)
        height, width = folder.stream.codec_context.height, folder.stream.codec_context.width
    note = ""
    if min(height, width) > short_side:
        folder.short_side = short_side
    else:
        note = f"kept at its size {width}x{height}: not larger than --short-side {short_side}"
    if isinstance(folder, FrameFolderSource):
        frames = (folder.decode([i])[0].numpy() for i in range(folder.num_frames))
        return frames, folder.num_frames, Fraction(12), note  # SSv1 frames are 12 per second
    rate = folder.stream.average_rate or folder.stream.guessed_rate or Fraction(30)
    return folder.frames(), folder.num_frames, Fraction(rate), note


def _count(output: Path, frames: bool) -> int:
    """Frames of a finished output (0 when it cannot be opened)."""
    try:
        if frames:
            return FrameFolderSource(output).num_frames
        return PyAVSource(output).num_frames
    except LOAD_ERRORS:
        return 0


def _write_mp4(frames: Iterator, rate: Fraction, tmp: Path, keyint: int, crf: int) -> int:
    import av

    written = 0
    with av.open(str(tmp), "w", format="mp4") as container:
        stream = None
        for rgb in frames:
            if stream is None:
                stream = container.add_stream("libx264", rate=rate)
                stream.height, stream.width = rgb.shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.codec_context.thread_count = 1  # the workers are the parallelism
                stream.options = {"crf": str(crf), "g": str(keyint), "keyint_min": str(keyint), "preset": "fast"}
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = written, 1 / rate
            container.mux(stream.encode(frame))
            written += 1
        if stream is not None:
            container.mux(stream.encode())
    return written


def _write_jpegs(frames: Iterator, tmp: Path) -> int:
    import torch
    from torchvision.io import encode_jpeg

    tmp.mkdir(parents=True)
    written = 0
    for rgb in frames:
        written += 1
        jpeg = encode_jpeg(torch.from_numpy(rgb).permute(2, 0, 1), quality=JPEG_QUALITY)
        (tmp / f"{written:05d}.jpg").write_bytes(jpeg.numpy().tobytes())
    return written


class _TookTooLong(Exception):
    pass


@contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`_TookTooLong` in this (main) thread once ``seconds`` have passed (SIGALRM:
    checked between frames, as decoding and encoding return to Python at every frame)."""
    if not seconds:
        yield
        return

    def expired(*_: object) -> None:
        raise _TookTooLong

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def convert(
    task: Task, backend: str, short_side: int, keyint: int, crf: int, frames: bool, timeout: float | None = None
) -> Outcome:
    """One video -> its output within ``timeout`` seconds; a whole output already there is skipped.
    Never raises for a bad video."""
    if not task.source:
        return Outcome(task.id, "failed", task.reason)
    try:
        with _time_limit(timeout):
            return _convert(task, backend, short_side, keyint, crf, frames)
    except _TookTooLong:
        _remove_partial(Path(task.output), frames)
        return Outcome(task.id, "failed", f"{task.source}: took longer than {timeout:g} s (--timeout)")


def _partial(output: Path, frames: bool) -> Path:
    """Where ``output`` is written until it is whole (then renamed)."""
    return output.with_name(f".{output.name}.partial{'' if frames else '.mp4'}")


def _remove_partial(output: Path, frames: bool) -> None:
    partial = _partial(output, frames)
    shutil.rmtree(partial) if partial.is_dir() else partial.unlink(missing_ok=True)


def _convert(task: Task, backend: str, short_side: int, keyint: int, crf: int, frames: bool) -> Outcome:
    output = Path(task.output)
    try:
        source_frames, count, rate, note = _source_frames(task.source, backend, short_side)
        before = _size(Path(task.source))
        if output.exists():
            whole = task.done_frames if task.done_frames >= 0 else count
            if _count(output, frames) == whole:
                return Outcome(task.id, "skipped", bytes_before=before, bytes_after=_size(output), num_frames=whole)
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = _partial(output, frames)
        _remove_partial(output, frames)  # of an interrupted run
        written = _write_jpegs(source_frames, tmp) if frames else _write_mp4(source_frames, rate, tmp, keyint, crf)
        if written == 0 or _count(tmp, frames) != written:
            raise VideoError(f"{task.source}: {written} frames decoded and {_count(tmp, frames)} written")
        if written != count:  # the container's count is not what decodes: the copy holds what does
            note = "; ".join(filter(None, [f"{written} frames decode, the container announces {count}", note]))
        if output.is_dir():
            shutil.rmtree(output)
        os.replace(tmp, output)
        return Outcome(task.id, "converted", bytes_before=before, bytes_after=_size(output), num_frames=written,
                       note=note)  # fmt: skip
    except (*LOAD_ERRORS, MemoryError) as e:
        _remove_partial(output, frames)
        return Outcome(task.id, "failed", str(e))


def _convert_star(args: tuple) -> Outcome:
    return convert(*args)


def plan(dataset: VideoDataset, out: str | Path, frames: bool) -> list[Task]:
    """A task per video of ``dataset``: where it is and where its output goes, at the video's path
    under the root as the annotation names it (a symlinked video or root is not followed: two
    links to one file are two outputs, named after the links)."""
    if Path(out).resolve() == Path(dataset.root).resolve():
        raise DataError(f"--out {out} is the data root: prepare writes a copy and never touches the sources")
    root, out = Path(os.path.abspath(dataset.root)), Path(out).resolve()
    dataset.find_layout()
    done = _read_done(out)
    tasks: list[Task] = []
    owner: dict[str, Task] = {}
    for i in range(len(dataset)):
        vid = dataset.index.ids[i]
        try:
            source = Path(os.path.abspath(dataset.path(i)))
        except VideoError as e:
            tasks.append(Task(vid, "", "", str(e)))
            continue
        relative = source.relative_to(root) if source.is_relative_to(root) else Path(source.name)
        output = out / (relative.with_suffix("") if frames else relative.with_suffix(".mp4"))
        task = Task(vid, str(source), str(output), done_frames=done.get(output.relative_to(out).as_posix(), -1))
        if str(output) in owner:
            first = owner[str(output)]
            raise DataError(
                f"videos {first.id!r} ({first.source}) and {vid!r} ({source}) would both be prepared as {output}; "
                "rename one of them (prepare keeps the annotation's paths and changes the suffix only)"
            )
        owner[str(output)] = task
        tasks.append(task)
    return tasks


def _read_done(out: Path) -> dict[str, int]:
    """The finished outputs an earlier run recorded: relative path -> frames."""
    done: dict[str, int] = {}
    if (out / DONE_FILE).is_file():
        for line in (out / DONE_FILE).read_text(encoding="utf-8").splitlines():
            relative, _, frames = line.rpartition("\t")
            if relative and frames.isdigit():
                done[relative] = int(frames)
    return done


def _check_settings(out: Path, settings: dict[str, object]) -> None:
    """Store ``settings`` in ``OUT``, or refuse ones other than those its copies were made with."""
    path = out / SETTINGS_FILE
    if path.is_file():
        made = json.loads(path.read_text(encoding="utf-8"))
        if made != settings:
            given = ", ".join(f"{k}={v}" for k, v in settings.items())
            before = ", ".join(f"{k}={v}" for k, v in made.items())
            raise DataError(
                f"--out {out} holds copies made with {before} ({path}), not {given}: prepare into another folder, "
                "or pass the same settings (a folder of copies made two ways would train on both)"
            )
    else:
        path.write_text(json.dumps(settings, indent=1) + "\n", encoding="utf-8")


def _lock(out: Path) -> int:
    """An exclusive lock on ``OUT`` for this process (released when it ends, however it ends)."""
    fd = os.open(out / ".prepare.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DataError(f"another `seqctx data prepare` is writing into {out}; wait for it to end") from None
    return fd


def _class_list(out: Path, classes: list[str]) -> list[int]:
    """This split's label index -> the index in ``OUT/classes.txt``, written by the first split
    prepared into ``OUT`` and reused by the next ones (one numbering for every split)."""
    path = out / "classes.txt"
    if not path.is_file():
        path.write_text("".join(name + "\n" for name in classes), encoding="utf-8")
        return list(range(len(classes)))
    known = [line for line in path.read_text(encoding="utf-8").splitlines() if line]
    index = {name: i for i, name in enumerate(known)}
    missing = [name for name in classes if name not in index]
    if missing:
        raise DataError(
            f"{path} (written by an earlier split) lacks {len(missing)} classes of this annotation "
            f"({', '.join(map(repr, missing[:3]))}{', ...' if len(missing) > 3 else ''}); pass the full class list "
            "with --labels, or prepare into another folder"
        )
    return [index[name] for name in classes]


def _writes_list(dataset: VideoDataset, frames: bool) -> bool:
    """Whether the prepared copies need a list file of their own (their names or format change)."""
    from .datasets import SomethingSomethingV1, VideoListDataset

    return frames or isinstance(dataset, VideoListDataset | SomethingSomethingV1)


def _check_listable(tasks: list[Task], out: Path) -> None:
    """A list file separates its fields by whitespace: an output path with a space cannot be in one."""
    spaced = [
        task.id for task in tasks if task.output and any(c.isspace() for c in str(Path(task.output).relative_to(out)))
    ]
    if spaced:
        shown = ", ".join(map(repr, spaced[:3])) + (f" and {len(spaced) - 3} more" if len(spaced) > 3 else "")
        raise DataError(
            f"{len(spaced)} videos have whitespace in their paths ({shown}), which the list file written for the "
            "prepared copies cannot hold ('path label'); rename them (e.g. spaces to underscores) and their "
            "annotation entries, or, for Kinetics and SSv2, prepare MP4 copies (no --frames): their own annotation "
            "finds those"
        )


def _labelled(
    dataset: VideoDataset, tasks: list[Task], outcomes: dict[str, Outcome], number: list[int] | None
) -> tuple[list[tuple[Task, Outcome, int]], int]:
    """The prepared videos with a label, as ``(task, outcome, label)`` with the label renumbered by
    ``number`` (OUT's class list) when given, and how many prepared videos have none (-1)."""
    prepared, unlabelled = [], 0
    for i, task in enumerate(tasks):
        done, label = outcomes.get(task.id), int(dataset.index.labels[i])
        if done is None or done.status == "failed":
            continue
        if label < 0:
            unlabelled += 1
            continue
        prepared.append((task, done, number[label] if number is not None else label))
    return prepared, unlabelled


def write_annotation(dataset: VideoDataset, annotation: str | Path, tasks: list[Task], outcomes: dict[str, Outcome],
                     out: Path, frames: bool) -> tuple[str, int]:  # fmt: skip
    """The annotation for ``out`` where names change: a list file (``path label``, or ``path
    num_frames label`` for frame folders) named after ``annotation`` (``_prepared`` added where that
    would be the annotation itself), labels numbered by ``OUT/classes.txt`` (:func:`_class_list`),
    and how many prepared videos it leaves out for want of a label (a test split: ``train``
    reads labels); ``("", 0)`` when the original annotation finds the outputs as it is (Kinetics
    and SSv2 videos)."""
    if not _writes_list(dataset, frames):
        return "", 0
    number = _class_list(out, dataset.classes) if dataset.classes else None
    prepared, unlabelled = _labelled(dataset, tasks, outcomes, number)
    lines = []
    for task, done, label in prepared:
        relative = Path(task.output).relative_to(out).as_posix()
        lines.append(f"{relative} {done.num_frames} {label}" if frames else f"{relative} {label}")
    path = out / (Path(annotation).stem + ("_frames.txt" if frames else ".txt"))
    if path.resolve() == Path(annotation).resolve():
        path = path.with_name(f"{path.stem}_prepared.txt")
    path.write_text("".join(line + "\n" for line in lines))
    return str(path), unlabelled


def _write_shards(dataset: VideoDataset, annotation: str | Path, tasks: list[Task], outcomes: dict[str, Outcome],
                  out: Path, shard_size: int, settings: dict[str, object]) -> tuple[ShardIndex, int]:  # fmt: skip
    """The labelled copies packed into ``OUT/shards/<annotation's stem>/`` (:func:`~.shards.write_shards`),
    labels numbered by ``OUT/classes.txt``; the index and how many unlabelled copies it leaves out."""
    if dataset.classes:
        number = _class_list(out, dataset.classes)
        classes = [line for line in (out / "classes.txt").read_text(encoding="utf-8").splitlines() if line]
    else:  # a list file's bare numbers: their names are the numbers
        number, classes = None, [str(k) for k in range(dataset.max_label() + 1)]
    prepared, unlabelled = _labelled(dataset, tasks, outcomes, number)
    samples = [(task.id, label, Path(task.output), done.num_frames) for task, done, label in prepared]
    if not samples:
        raise DataError(f"{annotation}: no labelled video was prepared, so there is nothing to shard")
    name = Path(annotation).stem
    settings = {**settings, "shard_size": shard_size}
    return write_shards(samples, out / "shards" / name, name, shard_size, classes, settings), unlabelled


def prepare_dataset(
    dataset: VideoDataset,
    annotation: str | Path,
    out: str | Path,
    short_side: int = 256,
    keyint: int = 16,
    crf: int = 18,
    frames: bool = False,
    workers: int = 0,
    progress: bool = True,
    timeout: float | None = 600.0,
    shard_size: int | None = None,
) -> PrepareReport:
    """Convert every video of ``dataset`` (see the module), each within ``timeout`` seconds (None:
    no limit; one that takes longer fails, named); each run's failures are appended to
    ``OUT/prepare_failures.txt`` (a ``#`` line, then ``id<TAB>reason`` lines). With
    ``shard_size`` (bytes), the labelled copies are also packed into WebDataset shards of about
    that size with their index, ``OUT/shards/<annotation's stem>/`` (:mod:`~.shards`)."""
    if shard_size is not None and frames:
        raise DataError("--shards packs MP4 copies; drop --frames (shards of JPEG folders are not supported)")
    if short_side < 2 or short_side % 2:
        raise DataError(f"--short-side must be an even number of pixels (H.264 4:2:0), got {short_side}")
    if keyint < 1:
        raise DataError(f"--keyint must be at least 1 frame, got {keyint}")
    if timeout is not None and timeout < 0:
        raise DataError(f"--timeout must be a number of seconds >= 0 (0: no limit), got {timeout:g}")
    from seqctx.outputs import output_folder

    out = output_folder(out, "--out").resolve()
    tasks = plan(dataset, out, frames)
    if _writes_list(dataset, frames):
        _check_listable(tasks, out)
    out.mkdir(parents=True, exist_ok=True)
    lock = _lock(out)
    try:
        settings = {"short_side": short_side, "keyint": keyint, "crf": crf, "format": "jpeg" if frames else "mp4"}
        _check_settings(out, settings)
        jobs = [(task, dataset.backend, short_side, keyint, crf, frames, timeout) for task in tasks]
        with open(out / DONE_FILE, "a", encoding="utf-8") as done:
            outcomes = _run(jobs, workers, progress, done, out, frames)
        report = PrepareReport()
        for task in tasks:
            report.add(outcomes[task.id])
        report.annotation, report.unlabelled = write_annotation(dataset, annotation, tasks, outcomes, out, frames)
        if shard_size is not None:
            index, report.unlabelled = _write_shards(dataset, annotation, tasks, outcomes, out, shard_size, settings)
            report.shards, report.shard_count = index.url, len(index.shards)
        with open(out / FAILURES_FILE, "a", encoding="utf-8") as failures:  # one block per run, never replaced
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            failures.write(f"# {stamp} {annotation}: {len(report.failed)} failed of {len(tasks)}\n")
            failures.write("".join(f"{vid}\t{reason}\n" for vid, reason in report.failed))
        return report
    finally:
        os.close(lock)


def _run(jobs: list[tuple], workers: int, progress: bool, done: TextIO, out: Path, frames: bool) -> dict[str, Outcome]:
    """Every job's outcome by video id, in this process or ``workers`` processes; each converted
    output recorded in ``done`` as it finishes (a stop keeps what was recorded)."""
    from tqdm import tqdm

    outcomes: dict[str, Outcome] = {}
    task_of = {job[0].id: job[0] for job in jobs}
    with tqdm(total=len(jobs), desc="preparing videos", disable=not progress) as bar:

        def record(task: Task, outcome: Outcome) -> None:
            outcomes[outcome.id] = outcome
            if outcome.status == "converted":
                done.write(f"{Path(task.output).relative_to(out).as_posix()}\t{outcome.num_frames}\n")
                done.flush()
            bar.update()

        try:
            if not workers:
                for job in jobs:
                    record(job[0], convert(*job))
                return outcomes
            from seqctx.stopping import worker_pool

            with worker_pool(workers) as pool:  # its exit ends the workers, mid-video ones too
                for outcome in pool.imap_unordered(_convert_star, jobs, chunksize=1):
                    record(task_of[outcome.id], outcome)
        except BaseException:  # a stop: no half-written output stays behind
            for task in task_of.values():
                if task.id not in outcomes and task.output:
                    _remove_partial(Path(task.output), frames)
            raise
    return outcomes
