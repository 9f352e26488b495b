"""Frame sampling: pure functions of ``(num_frames, rng)`` returning 0-based frame indices.

A sampler built by :func:`build_sampler` always returns :data:`Clips`, a list of clips, each a
list of frame indices (one clip in training; several for multi-clip testing). Short videos
never raise: indices past the end loop back (dense clips) or repeat (segments).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np

RngLike = np.random.Generator | int | None
Clips = list[list[int]]  # clips x frame indices


def _rng(rng: RngLike) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _check(num_frames: int, count: int, what: str) -> None:
    if num_frames < 1:
        raise ValueError(f"cannot sample from a video with num_frames={num_frames}")
    if count < 1:
        raise ValueError(f"{what} must be >= 1, got {count}")


def sample_segments(
    num_frames: int, num_segments: int, *, train: bool, rng: RngLike = None, twice: bool = False
) -> list[int]:
    """TSN's segment sampling (Wang et al., ECCV 2016; as TSM's code does it).

    The video is cut into ``num_segments`` equal segments. Training draws one random frame per
    segment; testing takes the segment centres ``int(tick / 2 + tick * i)`` with
    ``tick = num_frames / num_segments`` and, with ``twice``, also the starts ``int(tick * i)``
    (TSM's ``twice_sample``: ``2 * num_segments`` indices). Videos shorter than ``num_segments``
    repeat frames.
    """
    _check(num_frames, num_segments, "num_segments")
    tick = num_frames / num_segments
    if train:
        gen = _rng(rng)
        starts = [int(tick * i) for i in range(num_segments)]
        ends = [max(s + 1, int(tick * (i + 1))) for i, s in enumerate(starts)]
        return [int(gen.integers(s, min(e, num_frames))) if e > s + 1 else s for s, e in zip(starts, ends, strict=True)]
    centres = [int(tick / 2 + tick * i) for i in range(num_segments)]
    if twice:
        centres += [int(tick * i) for i in range(num_segments)]
    return centres


def sample_dense(
    num_frames: int,
    clip_len: int,
    frame_interval: int = 1,
    *,
    train: bool,
    num_clips: int = 1,
    rng: RngLike = None,
) -> Clips:
    """Dense clips for 3D models: ``clip_len`` frames ``frame_interval`` apart.

    Training starts each clip at a random position; testing places ``num_clips`` clips at the
    centres of equal intervals of the valid starts (multi-clip testing, as the Non-local and
    mmaction protocols). Clips longer than the video loop back to its start. TSM's dense sampling
    for Kinetics is ``sample_dense(n, num_segments, 64 // num_segments, ...)``.

    Returns ``num_clips`` lists of ``clip_len`` indices.
    """
    _check(num_frames, clip_len, "clip_len")
    if frame_interval < 1 or num_clips < 1:
        raise ValueError(f"frame_interval and num_clips must be >= 1, got {frame_interval}, {num_clips}")
    span = (clip_len - 1) * frame_interval + 1
    max_start = max(0, num_frames - span)
    if train:
        gen = _rng(rng)
        starts = [int(gen.integers(0, max_start + 1)) for _ in range(num_clips)]
    else:
        interval = (max_start + 1) / num_clips
        starts = [int(interval * i + interval / 2) for i in range(num_clips)]
    return [[(s + k * frame_interval) % num_frames for k in range(clip_len)] for s in starts]


def build_sampler(
    kind: str,
    *,
    train: bool,
    num_segments: int = 8,
    frame_interval: int = 1,
    num_clips: int = 1,
) -> Callable[..., Clips]:
    """A ``sampler(num_frames, rng=...) -> Clips`` for the datasets.

    ``kind="segments"``: TSN segments; testing with ``num_clips=2`` is TSM's twice-sampling (the
    centres and the starts of the segments as two clips). ``kind="dense"``: ``num_segments``
    consecutive frames ``frame_interval`` apart (3D models; TSM's dense Kinetics sampling with
    ``frame_interval = 64 // num_segments``), ``num_clips`` uniform clips in testing.
    """
    if kind == "segments":
        if num_clips not in (1, 2):
            raise ValueError(f"segment sampling tests with 1 or 2 clips (twice), got num_clips={num_clips}")

        def segments(num_frames: int, rng: RngLike = None) -> Clips:
            idx = sample_segments(num_frames, num_segments, train=train, rng=rng, twice=num_clips == 2 and not train)
            return [idx[i : i + num_segments] for i in range(0, len(idx), num_segments)]

        return segments
    if kind == "dense":
        return partial(
            sample_dense,
            clip_len=num_segments,
            frame_interval=frame_interval,
            train=train,
            num_clips=1 if train else num_clips,
        )
    raise ValueError(f"sampler kind must be 'segments' or 'dense', got {kind!r}")
