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
so a rerun skips the outputs that are whole (their frame count equals the source's) and
replaces partial ones; the sources are only read.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from seqctx.errors import DataError

from .datasets import LOAD_ERRORS, VideoDataset
from .decode import FrameFolderSource, PyAVSource, VideoError, open_video

FAILURES_FILE = "prepare_failures.txt"
JPEG_QUALITY = 90


@dataclass(frozen=True)
class Task:
    id: str
    source: str  # "" when the video was not found
    output: str
    reason: str = ""


@dataclass
class Outcome:
    id: str
    status: str  # converted | skipped | failed
    reason: str = ""
    bytes_before: int = 0
    bytes_after: int = 0
    num_frames: int = 0


@dataclass
class PrepareReport:
    converted: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (id, reason)
    bytes_before: int = 0
    bytes_after: int = 0
    annotation: str = ""  # the annotation written for OUT, when one was needed

    def add(self, outcome: Outcome) -> None:
        if outcome.status == "failed":
            self.failed.append((outcome.id, outcome.reason))
            return
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
        lines += [f"  failed {vid}: {reason}" for vid, reason in self.failed[:20]]
        if len(self.failed) > 20:
            lines.append(f"  ... {len(self.failed) - 20} more")
        if self.annotation:
            lines.append(f"annotation for the prepared videos: {self.annotation}")
        return "\n".join(lines)


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir()) if path.is_dir() else path.stat().st_size


def _source_frames(path: str, backend: str, short_side: int) -> tuple[Iterator, int, Fraction]:
    """``(frames, count, rate)``: every frame in order, displayed and scaled (uint8 ``(H, W, 3)``)."""
    if backend == "frames":
        folder = FrameFolderSource(path, short_side=short_side)
        frames = (folder.decode([i])[0].numpy() for i in range(folder.num_frames))
        return frames, folder.num_frames, Fraction(12)  # SSv1 frames are 12 per second
    source = open_video(path, "pyav", short_side=short_side)
    assert isinstance(source, PyAVSource)
    rate = source.stream.average_rate or source.stream.guessed_rate or Fraction(30)
    return source.frames(), source.num_frames, Fraction(rate)


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


def convert(task: Task, backend: str, short_side: int, keyint: int, crf: int, frames: bool) -> Outcome:
    """One video -> its output; a whole output already there is skipped. Never raises for a bad video."""
    if not task.source:
        return Outcome(task.id, "failed", task.reason)
    output = Path(task.output)
    try:
        source_frames, count, rate = _source_frames(task.source, backend, short_side)
        before = _size(Path(task.source))
        if output.exists() and _count(output, frames) == count:
            return Outcome(task.id, "skipped", bytes_before=before, bytes_after=_size(output), num_frames=count)
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = output.with_name(f".{output.name}.partial{'' if frames else '.mp4'}")
        if tmp.is_dir():  # a partial output of an interrupted run
            shutil.rmtree(tmp)
        tmp.unlink(missing_ok=True)
        written = _write_jpegs(source_frames, tmp) if frames else _write_mp4(source_frames, rate, tmp, keyint, crf)
        if written != count or _count(tmp, frames) != count:
            raise VideoError(f"{task.source}: {written} frames decoded and {_count(tmp, frames)} written, of {count}")
        if output.is_dir():
            shutil.rmtree(output)
        os.replace(tmp, output)
        return Outcome(task.id, "converted", bytes_before=before, bytes_after=_size(output), num_frames=count)
    except (*LOAD_ERRORS, MemoryError) as e:
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
    tasks = []
    for i in range(len(dataset)):
        vid = dataset.index.ids[i]
        try:
            source = Path(os.path.abspath(dataset.path(i)))
        except VideoError as e:
            tasks.append(Task(vid, "", "", str(e)))
            continue
        relative = source.relative_to(root) if source.is_relative_to(root) else Path(source.name)
        output = out / (relative.with_suffix("") if frames else relative.with_suffix(".mp4"))
        tasks.append(Task(vid, str(source), str(output)))
    return tasks


def write_annotation(dataset: VideoDataset, annotation: str | Path, tasks: list[Task], outcomes: dict[str, Outcome],
                     out: Path, frames: bool) -> str:  # fmt: skip
    """The annotation for ``out`` where names change: a list file (``path label``, or ``path
    num_frames label`` for frame folders) named after ``annotation``; "" when the original
    annotation finds the outputs as it is (Kinetics and SSv2 videos)."""
    from .datasets import VideoListDataset

    if not frames and not isinstance(dataset, VideoListDataset):
        return ""
    lines = []
    for i, task in enumerate(tasks):
        done = outcomes.get(task.id)
        if done is None or done.status == "failed":
            continue
        relative = Path(task.output).relative_to(out).as_posix()
        label = int(dataset.index.labels[i])
        lines.append(f"{relative} {done.num_frames} {label}" if frames else f"{relative} {label}")
    path = out / (Path(annotation).stem + ("_frames.txt" if frames else ".txt"))
    path.write_text("".join(line + "\n" for line in lines))
    if dataset.classes:
        (out / "classes.txt").write_text("".join(name + "\n" for name in dataset.classes))
    return str(path)


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
) -> PrepareReport:
    """Convert every video of ``dataset`` (see the module); the failures also go to
    ``OUT/prepare_failures.txt`` (``id<TAB>reason``)."""
    from tqdm import tqdm

    if short_side < 2 or short_side % 2:
        raise DataError(f"--short-side must be an even number of pixels (H.264 4:2:0), got {short_side}")
    if keyint < 1:
        raise DataError(f"--keyint must be at least 1 frame, got {keyint}")
    from seqctx.outputs import output_folder

    out = output_folder(out, "--out").resolve()
    tasks = plan(dataset, out, frames)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(task, dataset.backend, short_side, keyint, crf, frames) for task in tasks]
    report, outcomes = PrepareReport(), {}
    bar = tqdm(total=len(jobs), desc="preparing videos", disable=not progress)
    if workers:
        from seqctx.stopping import worker_pool

        with worker_pool(workers) as pool:
            results: Iterator[Outcome] = pool.imap_unordered(_convert_star, jobs, chunksize=1)
            for outcome in results:
                outcomes[outcome.id] = outcome
                report.add(outcome)
                bar.update()
    else:
        for job in jobs:
            outcome = convert(*job)
            outcomes[outcome.id] = outcome
            report.add(outcome)
            bar.update()
    bar.close()
    report.annotation = write_annotation(dataset, annotation, tasks, outcomes, out, frames)
    (out / FAILURES_FILE).write_text("".join(f"{vid}\t{reason}\n" for vid, reason in report.failed))
    return report
