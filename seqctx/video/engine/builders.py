"""Building the pieces a run needs from its config: model, datasets, loaders, epoch sampler."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Literal

import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler

from seqctx.errors import ConfigError, DataError, UserError
from seqctx.stopping import make_loader as managed_loader
from seqctx.video.data import (
    VideoDataset,
    build_dataset,
    build_sampler,
    build_transform,
    check_backend,
    collate_clips,
    left_right_pairs,
)  # fmt: skip
from seqctx.video.models import MODELS, build_model

from .config import Config


class EpochSampler(Sampler[int]):
    """The indices of one epoch for this rank.

    The epoch's stream is a permutation drawn from ``(seed, epoch)`` when shuffling (else
    ``0..size-1``): ``order(generator)`` (the data set's ``shuffled``: shards keep their samples
    together), ``torch.randperm`` by default; with ``repeats=k`` (``data.repeat_aug``, repeated augmentation: DeiT's
    RASampler) each video of the permutation comes ``k`` times in a row, as ``index + copy *
    size`` (the data set augments each copy differently), and the stream is cut to ``size`` items
    so that an epoch keeps its length.

    Training (``batch_size``, the per-process batch): an epoch is ``steps = size // G`` global
    batches of ``G = batch_size x world`` items; global batch ``k`` is the stream's items ``k*G ..
    (k+1)*G - 1``, dealt ``rank::world`` (a video's repeated copies go to neighbouring ranks of
    one global batch); the last partial global batch is dropped, so no video is trained twice in
    an epoch. :meth:`set_epoch` with ``start`` (the samples seen, a multiple of ``G``) continues an
    epoch after its first ``start`` items, whatever number of processes trained them.

    Evaluation (no ``batch_size``): every index once, ``rank::world``, no padding."""

    def __init__(
        self, size: int, shuffle: bool, seed: int = 0, rank: int = 0, world: int = 1, batch_size: int | None = None,
        repeats: int = 1, order: Callable[[torch.Generator], list[int]] | None = None,
    ) -> None:  # fmt: skip
        self.size, self.shuffle, self.seed, self.rank, self.world = size, shuffle, seed, rank, world
        self.order = order
        self.repeats = repeats
        self.global_batch = batch_size * world if batch_size else 0
        self.steps = size // self.global_batch if batch_size else 0  # global batches per training epoch
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        if self.global_batch and (start % self.global_batch or start > self.steps * self.global_batch):
            raise ValueError(f"start must be a multiple of the global batch {self.global_batch} up to "
                             f"{self.steps * self.global_batch}, got {start}")  # fmt: skip
        self.epoch, self.start = epoch, start

    def stream(self) -> list[int]:
        """The epoch's items in order, before they are dealt to the ranks."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = self.order(g) if self.order else torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        if self.repeats > 1:
            order = [i + copy * self.size for i in order for copy in range(self.repeats)][: self.size]
        return order

    def indices(self) -> list[int]:
        order = self.stream()
        if self.global_batch:
            order = order[self.start : self.steps * self.global_batch]
        return order[self.rank :: self.world]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices())

    def __len__(self) -> int:
        if self.global_batch:
            return (self.steps * self.global_batch - self.start) // self.world
        return len(range(self.rank, self.size, self.world))


def make_model(cfg: Config) -> nn.Module:
    """The model of ``cfg.model``, built for frames of ``data.size`` (GE-theta's global gather
    covers that map)."""
    m = cfg.model
    try:
        return build_model(
            m.name, m.num_classes, num_segments=m.num_segments, context=m.context, dropout=m.dropout,
            pretrained=m.pretrained, width=m.width, input_size=cfg.data.size, stride_in_1x1=m.stride_in_1x1,
            context_kwargs=m.context_kwargs, shift=m.shift,
        )  # fmt: skip
    except (ValueError, TypeError) as e:  # a value the model's constructors reject (context_kwargs, ...)
        if isinstance(e, UserError):
            raise
        raise ConfigError(f"model {m.name} (context={m.context}, context_kwargs={m.context_kwargs}): {e}") from None


def memory_format(cfg: Config) -> torch.memory_format:
    """The model's memory format with ``train.channels_last``: ``channels_last_3d`` for 3D models'
    5-D weights, ``channels_last`` for frame models; ``contiguous_format`` without it."""
    if not cfg.train.channels_last:
        return torch.contiguous_format
    return torch.channels_last_3d if MODELS[cfg.model.name].family.dims == 3 else torch.channels_last


Split = Literal["train", "val", "test"]


def make_dataset(
    cfg: Config, split: Split, annotation: str | None = None, clips: int | None = None, crops: int | None = None,
    classes: Sequence[str] | None = None,
) -> VideoDataset:  # fmt: skip
    """The training set (``data.on_error`` policy) or an evaluation set (``data.val_annotation``
    unless ``annotation`` is given; unreadable videos are left out and reported, never replaced),
    with its layout found and its first videos checked to exist.

    Evaluation views: ``clips`` x ``crops`` when given; else validation's (``"val"``:
    ``data.val_clips`` x ``data.val_crops`` of ``data.size``) or the test protocol (``"test"``:
    ``data.test_clips`` x ``data.test_crops`` crops of ``data.test_crop_size``).
    ``classes``: the run's class list (the training set's, or a checkpoint's), so that every
    split of a run maps a label name to the same index."""
    d, train = cfg.data, split == "train"
    check_backend(d.backend)  # here, not once per video in a loader worker
    default_clips, default_crops = (d.test_clips, d.test_crops) if split == "test" else (d.val_clips, d.val_crops)
    sampler = build_sampler(
        d.sampler, train=train, num_segments=cfg.model.num_segments, frame_interval=d.frame_interval,
        num_clips=clips or default_clips,
    )  # fmt: skip
    crop_size = (d.test_crop_size or d.size) if split == "test" else d.size
    transform = build_transform(
        train, size=crop_size, scale_size=d.scale_size or d.size * 256 // 224, crop=d.crop, flip=d.flip is True,
        test_crops=crops or default_crops, scale_range=d.scale_range, color_jitter=d.color_jitter,
        randaugment=d.randaugment,
    )  # fmt: skip
    annotation = annotation or (d.train_annotation if train else d.val_annotation)
    if not annotation:
        raise DataError(f"no {'data.train_annotation' if train else 'data.val_annotation'} to read videos from")
    extra = {"shuffle_buffer": d.shuffle_buffer} if d.format == "shards" else {}
    dataset = build_dataset(
        annotation, d.root, d.labels, d.format, classes=classes, **extra,
        sampler=sampler, transform=transform, on_error=d.on_error if train else "drop",
        backend=d.backend, frame_template=d.frame_template, first_frame=d.first_frame,
        seed=cfg.train.seed, decode_threads=d.decode_threads, short_side=d.decode_short_side,
        decode_timeout=d.decode_timeout,
    )  # fmt: skip
    dataset.check_found()
    if train and d.flip == "swap_left_right":
        dataset.flip_pairs = left_right_pairs(dataset.classes)
        if not dataset.flip_pairs:
            raise ConfigError(
                "data.flip=swap_left_right: no class names of this data set differ only by left/right; use "
                "data.flip=true (left and right do not change the class) or false"
            )
    top = dataset.max_label()
    if top >= cfg.model.num_classes:
        raise DataError(
            f"model.num_classes is {cfg.model.num_classes} but {annotation} has labels up to {top} "
            f"({top + 1} classes); set model.num_classes to at least {top + 1}"
        )
    return dataset


def make_loader(
    cfg: Config, dataset: VideoDataset, sampler: Sampler[int], batch_size: int, train: bool = False
) -> DataLoader:
    """Batches of :func:`collate_clips`, by :func:`seqctx.stopping.make_loader` (workers ignore
    the stop signals; the process ends them). A training loader drops the last partial batch (a
    batch of one breaks BatchNorm on 1x1 maps, and would cost the epoch) and keeps its workers
    across epochs (``persistent_workers``), each prefetching ``data.prefetch_factor`` batches."""
    workers = cfg.data.workers
    extra = {"persistent_workers": train, "prefetch_factor": cfg.data.prefetch_factor} if workers else {}
    return managed_loader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, pin_memory=torch.cuda.is_available(),
        drop_last=train, collate_fn=collate_clips,
        generator=torch.Generator().manual_seed(cfg.train.seed),  # leaves the global RNG alone
        **extra,
    )  # fmt: skip
