"""What every analysis shares: the model and data of a checkpoint, passes over the data with forward
hooks (each process of a torchrun job takes its share of the videos), accumulators summed across
processes, and the files an analysis writes (``NAME.png``, ``NAME.json``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset
from torch.utils.hooks import RemovableHandle

from seqctx.video.data import fold_views
from seqctx.video.engine.builders import EpochSampler, make_dataset, make_loader
from seqctx.video.engine.config import Config
from seqctx.video.engine.distributed import all_gather_objects, rank_and_world


@dataclass
class Batch:
    """The batch the model is running on, for hooks: ``labels (N,)`` and ``videos = N`` (a frame
    model's features hold ``N * T`` frames)."""

    labels: Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))
    videos: int = 0

    def per_video(self, features: Tensor) -> Tensor:
        """``(N*f, C, *S)`` features -> ``(N, C)``: the mean over space and a video's ``f`` frames."""
        pooled = features.float().mean(tuple(range(2, features.dim())))  # (N*f, C)
        return pooled.view(self.videos, -1, pooled.shape[1]).mean(1)


Hook = Callable[[nn.Module, tuple[Tensor, ...], Tensor], Tensor | None]
Rerun = Callable[[list[tuple[nn.Module, Hook]]], float]  # top-1 (%) of another pass with extra hooks


def across_classes(labels: np.ndarray, count: int) -> list[int]:
    """``count`` positions of ``labels`` drawn round-robin over the classes (the first video of
    each class, then the second, ...; classes in order of first appearance, unlabelled videos as
    one more class), returned in file order: as many classes as ``count`` allows."""
    _, first, codes = np.unique(labels, return_index=True, return_inverse=True)
    class_order = np.argsort(np.argsort(first))[codes]  # each video's class, numbered by first appearance
    by_class = np.argsort(codes, kind="stable")  # positions grouped by class, file order within
    counts = np.bincount(codes)
    rank_in_class = np.empty(len(labels), np.int64)
    rank_in_class[by_class] = np.arange(len(labels)) - np.repeat(np.cumsum(counts) - counts, counts)
    chosen = np.lexsort((np.arange(len(labels)), class_order, rank_in_class))[:count]
    return sorted(chosen.tolist())


def analysis_loader(cfg: Config, max_videos: int | None, classes: Sequence[str] | None = None) -> DataLoader:
    """The evaluation set (``data.val_annotation``; ``max_videos`` of it drawn across the classes,
    :func:`across_classes`) with the run's ``classes``, one view per video, this process's share."""
    dataset = make_dataset(cfg, "val", clips=1, crops=1, classes=classes)
    if max_videos is not None and max_videos < len(dataset):
        dataset = Subset(dataset, across_classes(dataset.index.labels, max_videos))  # type: ignore[assignment]
    rank, world = rank_and_world()
    return make_loader(cfg, dataset, EpochSampler(len(dataset), shuffle=False, rank=rank, world=world),
                       cfg.data.batch_size)  # type: ignore[arg-type]  # fmt: skip


@torch.no_grad()
def data_pass(
    model: nn.Module, loader: DataLoader, device: torch.device, hooks: Iterable[tuple[nn.Module, Hook]],
    batch: Batch, on_logits: Callable[[Tensor, Tensor], None] | None = None,
) -> None:  # fmt: skip
    """Run the model over the loader in eval mode with forward ``hooks`` attached (removed after);
    ``batch`` tells them the current labels; ``on_logits(logits, labels)`` sees each output."""
    model.eval()
    handles: list[RemovableHandle] = [m.register_forward_hook(h) for m, h in hooks]
    try:
        for clips, labels, _ in loader:
            if len(clips) == 0:
                continue
            batch.labels, batch.videos = torch.as_tensor(labels).to(device), len(clips)
            logits = model(fold_views(clips, device)[0])  # one view per video
            if on_logits is not None:
                on_logits(logits, batch.labels)
    finally:
        for h in handles:
            h.remove()


def summed(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` (tensors and numbers) summed over the processes, key by key."""
    parts = all_gather_objects({k: v.cpu() if isinstance(v, Tensor) else v for k, v in state.items()})
    out = dict(parts[0])
    for part in parts[1:]:
        for k, v in part.items():
            out[k] = out[k] + v
    return out


def write_json(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")


def layer_names(model: nn.Module, types: type | tuple[type, ...]) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of the model's modules of ``types``, in network (construction) order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, types)]
