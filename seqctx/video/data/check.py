"""``seqctx data check``: open every video of an annotation file and report the bad ones.

Each video is opened as training opens it (backend, decode size, time limit), its frames
counted and its first and last frames decoded. With ``exact``, frames read by random access at
a few positions are also compared with a sequential decode of the same file (every frame in
order, the ground truth): a video whose random access returns other frames is ``inexact``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

from seqctx.stopping import make_loader

from .datasets import LOAD_ERRORS, VideoDataset
from .decode import VideoError, read_sequential

STATUSES = ("ok", "missing", "unreadable", "too_short", "miscounted", "inexact")
EXACT_TOLERANCE = 1.0  # mean absolute difference (of 255) within one decoder's rounding; a wrong frame is far above


@dataclass
class VideoStatus:
    id: str
    path: str
    status: str  # one of STATUSES
    num_frames: int = 0
    reason: str = ""
    access: str = ""  # seek | sequential: how the backend reads this video (decode.VideoSource.access)


def exact_positions(num_frames: int) -> list[int]:
    """Where ``--exact`` compares: the second frame, a third and two thirds in, and the last."""
    return sorted({min(1, num_frames - 1), num_frames // 3, 2 * num_frames // 3, num_frames - 1})


class _Probe(Dataset):
    """Opens video ``i`` of a dataset, counts its frames and decodes the first and the last one
    (and, with ``exact``, compares random access with a sequential decode)."""

    def __init__(self, dataset: VideoDataset, min_frames: int, exact: bool) -> None:
        self.dataset, self.min_frames, self.exact = dataset, min_frames, exact

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> VideoStatus:
        record = self.dataset.index[i]
        try:
            path = self.dataset.path(i)
        except VideoError as e:
            return VideoStatus(record.id, "", "missing", reason=str(e))
        try:
            source = self.dataset.open(path)
            source.read([0, source.num_frames - 1])
            if self.exact:
                positions = exact_positions(source.num_frames)
                random = source.read(positions).float()
                truth = read_sequential(
                    path, positions, self.dataset.backend, self.dataset.short_side,
                    frame_template=self.dataset.frame_template, first_frame=self.dataset.first_frame,
                ).float()  # fmt: skip
        except LOAD_ERRORS as e:
            return VideoStatus(record.id, str(path), "unreadable", reason=str(e))
        status = VideoStatus(record.id, str(path), "ok", source.num_frames, access=source.access)
        if source.num_frames < self.min_frames:
            status.status, status.reason = "too_short", f"{source.num_frames} frames < {self.min_frames}"
        elif record.num_frames is not None and record.num_frames != source.num_frames:
            status.status = "miscounted"
            holder = "the folder" if isinstance(path, Path) and path.is_dir() else "the video"
            status.reason = f"the annotation says {record.num_frames} frames, {holder} holds {source.num_frames}"
        elif self.exact:
            if random.shape != truth.shape:
                wrong, worst = positions, float("inf")
            else:
                error = (random - truth).abs().flatten(1).mean(1).tolist()  # per frame
                wrong, worst = [p for p, e in zip(positions, error, strict=True) if e > EXACT_TOLERANCE], max(error)
            if wrong:
                status.status = "inexact"
                status.reason = (
                    f"random access ({self.dataset.backend}, {source.access}) returns other frames than a "
                    f"sequential decode at {wrong} (mean difference up to {worst:.1f} of 255)"
                )
        return status


def check_dataset(
    dataset: VideoDataset, min_frames: int = 8, workers: int = 0, progress: bool = True, exact: bool = False
) -> list[VideoStatus]:
    """The status of every video, opened in ``workers`` DataLoader processes."""
    from tqdm import tqdm

    loader = make_loader(_Probe(dataset, min_frames, exact), batch_size=None, num_workers=workers)
    return list(tqdm(loader, total=len(dataset), desc="checking videos", disable=not progress))


def frame_naming(dataset: VideoDataset) -> str:
    """How the data set's first frame folder names its frames, as given or as found (one line;
    "" for videos)."""
    from .backends.frames import FrameFolderSource

    for i in range(min(len(dataset), 10)):
        try:
            path = dataset.path(i)
        except LOAD_ERRORS:
            continue
        if not isinstance(path, Path) or not path.is_dir():
            return ""  # a video (a file, or a shard's sample)
        try:
            folder = FrameFolderSource(path, template=dataset.frame_template, start=dataset.first_frame)
        except LOAD_ERRORS:
            continue
        how = "given" if dataset.frame_template else "found in " + str(path)
        return f"frame folders: {folder.template} from {folder.start} ({how}; data.frame_template, data.first_frame)"
    return ""


def format_report(statuses: list[VideoStatus]) -> str:
    counts = Counter(s.status for s in statuses)
    lines = [f"{len(statuses)} videos: " + ", ".join(f"{counts.get(k, 0)} {k}" for k in STATUSES)]
    lines += [f"  {s.status:10s} {s.id}: {s.reason}" for s in statuses if s.status != "ok"]
    frames = [s.num_frames for s in statuses if s.status == "ok"]
    if frames:
        lines.append(
            f"frames per video: min {min(frames)}, median {sorted(frames)[len(frames) // 2]}, max {max(frames)}"
        )
    sequential = sum(s.access == "sequential" for s in statuses)
    if sequential:
        lines.append(
            f"{sequential} videos are read sequentially from their first frame (AVI, or MPEG-4 Part 2 with decord: "
            "their timestamps cannot name frames, so seeking could return neighbours); `seqctx data prepare` "
            "re-encodes them for exact seeking"
        )
    return "\n".join(lines)
