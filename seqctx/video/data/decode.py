"""Reading frames, the front door of the decoder backends (:mod:`.backends`):
``open_video(path, backend, ...)`` and ``read_frames(path, indices, backend, short_side)`` ->
uint8 ``(T, H, W, 3)``, frame-exact, at the short side, in displayed orientation.

``backend="auto"`` (the default) reads a folder with ``frames`` and a video with the first
backend of :data:`~.backends.AUTO_ORDER` that is installed and opens it. Open videos inside
``Dataset.__getitem__``, never in the parent process: a decord reader opened before forking
hangs the DataLoader workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import torch

from .backends import AUTO_ORDER, REGISTRY, BackendUnavailable, VideoError, VideoSource, why_unavailable
from .backends.base import Blob, Media

Backend = Literal["auto", "decord", "pyav", "torchcodec", "frames"]
BACKENDS: tuple[str, ...] = get_args(Backend)


def check_backend(backend: str) -> None:
    """A :class:`BackendUnavailable` saying how to install ``backend`` when this machine cannot
    run it; a ``ValueError`` for a name that is no backend."""
    if backend == "auto":
        return
    if backend not in REGISTRY:
        raise ValueError(f"unknown video backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
    reason = why_unavailable(backend)
    if reason is not None:
        raise BackendUnavailable(f"the video backend {backend!r} cannot run here: {reason}")


def installed_backends() -> list[str]:
    """The video backends of :data:`~.backends.AUTO_ORDER` that can run here, in that order."""
    return [name for name in AUTO_ORDER if why_unavailable(name) is None]


def open_video(
    path: Media,
    backend: str = "auto",
    num_threads: int = 1,
    short_side: int | None = None,
    frame_template: str | None = None,
    first_frame: int | None = None,
) -> VideoSource:
    """Open a video (or a frame folder) with ``backend``; ``.num_frames``, ``.read(indices)``.
    ``num_threads``: decoding threads (one per DataLoader worker by default: a node runs many
    workers). ``short_side``: decode at that shorter side. ``frame_template`` and
    ``first_frame``: how a frame folder's files are named (found from the folder when None).
    ``path`` may be a :class:`~.backends.base.Blob`: a video in memory (a shard's sample).
    A missing or empty file raises :class:`VideoError` naming it, whatever the backend; under
    ``auto``, one no installed backend opens names each one's reason."""
    if short_side is not None and short_side < 1:
        raise ValueError(f"short_side must be a positive number of pixels or None, got {short_side}")
    check_backend(backend)
    if isinstance(path, Blob):
        if backend == "frames":
            raise VideoError(f"{path}: a video in memory is not a frame folder; read it with a video backend")
        if not path.data:
            raise VideoError(f"{path}: the video is empty")
    else:
        path = Path(path)
        if backend == "frames" or (backend == "auto" and path.is_dir()):
            return REGISTRY["frames"](path, num_threads, short_side, frame_template, first_frame)  # type: ignore[call-arg]
        if not path.is_file():
            raise VideoError(f"{path}: no such file")
        if path.stat().st_size == 0:
            raise VideoError(f"{path}: the file is empty")
    if backend != "auto":
        return REGISTRY[backend](path, num_threads, short_side)
    installed = installed_backends()
    errors: list[VideoError] = []
    for name in installed:
        try:
            return REGISTRY[name](path, num_threads, short_side)
        except VideoError as e:
            errors.append(e)
    if not errors:
        raise BackendUnavailable(f"no video backend can run here; {REGISTRY['pyav'].install}")
    if len(errors) == 1:
        raise errors[0]
    reasons = "; ".join(str(e).removeprefix(f"{path}: ") for e in errors)
    raise VideoError(f"{path}: no installed backend opens it: {reasons}") from errors[0]


def read_frames(
    path: str | Path, indices: Sequence[int], backend: str = "auto", short_side: int | None = None
) -> torch.Tensor:
    """The frames at ``indices`` (0-based, any order, repeats allowed) as uint8 ``(T, H, W, 3)``,
    with the shorter side ``short_side`` when given."""
    return open_video(path, backend, short_side=short_side).read(indices)


def read_sequential(
    path: str | Path, indices: Sequence[int], backend: str = "auto", short_side: int | None = None, **frames: Any
) -> torch.Tensor:
    """The frames at ``indices`` as a sequential decode gives them (every frame decoded in order
    from the first, no seeking): the ground truth :func:`read_frames` is compared with
    (``seqctx data check --exact``)."""
    return open_video(path, backend, short_side=short_side, **frames).read_sequentially(indices)
