"""``seqctx data check``: open every video of an annotation file and report the bad ones."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from torch.utils.data import DataLoader, Dataset

from .datasets import VideoDataset
from .decode import VideoError, open_video


@dataclass
class VideoStatus:
    id: str
    path: str
    status: str  # ok | missing | unreadable | too_short
    num_frames: int = 0
    reason: str = ""


class _Probe(Dataset):
    """Opens video ``i`` of a dataset, counts its frames and decodes the first and the last one."""

    def __init__(self, dataset: VideoDataset, min_frames: int) -> None:
        self.dataset, self.min_frames = dataset, min_frames

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> VideoStatus:
        record = self.dataset.index[i]
        try:
            path = self.dataset.path(i)
        except VideoError as e:
            return VideoStatus(record.id, "", "missing", reason=str(e))
        try:
            source = open_video(path, self.dataset.backend)
            source.read([0, source.num_frames - 1])
        except (VideoError, OSError, RuntimeError, ValueError) as e:
            return VideoStatus(record.id, str(path), "unreadable", reason=str(e))
        if source.num_frames < self.min_frames:
            reason = f"{source.num_frames} frames < {self.min_frames}"
            return VideoStatus(record.id, str(path), "too_short", source.num_frames, reason)
        return VideoStatus(record.id, str(path), "ok", source.num_frames)


def check_dataset(
    dataset: VideoDataset, min_frames: int = 8, workers: int = 0, progress: bool = True
) -> list[VideoStatus]:
    """The status of every video, opened in ``workers`` DataLoader processes."""
    from tqdm import tqdm

    loader = DataLoader(_Probe(dataset, min_frames), batch_size=None, num_workers=workers)
    return list(tqdm(loader, total=len(dataset), desc="checking videos", disable=not progress))


def format_report(statuses: list[VideoStatus]) -> str:
    counts = Counter(s.status for s in statuses)
    lines = [
        f"{len(statuses)} videos: "
        + ", ".join(f"{counts.get(k, 0)} {k}" for k in ("ok", "missing", "unreadable", "too_short"))
    ]
    lines += [f"  {s.status:10s} {s.id}: {s.reason}" for s in statuses if s.status != "ok"]
    frames = [s.num_frames for s in statuses if s.status == "ok"]
    if frames:
        lines.append(
            f"frames per video: min {min(frames)}, median {sorted(frames)[len(frames) // 2]}, max {max(frames)}"
        )
    return "\n".join(lines)
