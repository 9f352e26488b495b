"""Checkpoints: written to a temporary file and renamed (a kill during saving never leaves a
broken ``latest.pt``; a failed write leaves the previous file as it was), read with
``torch.load(..., weights_only=True)``; the last ``train.keep_checkpoints`` saves are kept as
``checkpoint_e<epoch>_i<iteration>.pt`` beside ``latest.pt``, and resuming falls back to the newest
readable one when ``latest.pt`` cannot be read."""

from __future__ import annotations

import logging
import os
import pickle
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqctx.errors import CheckpointError

log = logging.getLogger(__name__)

RETAINED = re.compile(r"checkpoint_e(\d+)_i(\d+)\.pt")  # checkpoint_e0002_i0000150.pt: epoch 2, iteration 150


def rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """This process's Python, NumPy and torch RNG states (and, for a CUDA ``device``, that GPU's)
    in types ``weights_only`` loading accepts."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    """Restore what :func:`rng_state` saved; the CUDA state goes to ``device``."""
    random.setstate(tuple(v if not isinstance(v, list) else tuple(v) for v in state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def _replace_atomically(path: Path, write: Any) -> None:
    """``write(file)`` into ``path.tmp``, flushed to disk, then renamed over ``path``. Any failure
    removes the temporary file and leaves ``path`` as it was; a failed write (a full disk, a
    folder that cannot be written) is a :class:`CheckpointError` naming ``path``."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise CheckpointError(
                f"could not write {path}: {e.strerror or e}; the previous {path.name} is unchanged (free space or "
                "make the folder writable, then resume)"
            ) from None
        raise


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Atomic save: ``path.tmp`` is written, flushed to disk, then renamed over ``path``."""
    _replace_atomically(Path(path), lambda f: torch.save(state, f))


def retained_checkpoints(folder: str | Path) -> list[Path]:
    """The retained ``checkpoint_e<epoch>_i<iteration>.pt`` files of a work folder, newest first."""
    found = [(m, p) for p in Path(folder).glob("checkpoint_e*_i*.pt") if (m := RETAINED.fullmatch(p.name))]
    return [p for m, p in sorted(found, key=lambda mp: (int(mp[0][1]), int(mp[0][2])), reverse=True)]


def retain_checkpoint(latest: str | Path, epoch: int, iteration: int, keep: int) -> None:
    """Copy the just saved ``latest`` as ``checkpoint_e<epoch>_i<iteration>.pt`` (atomically, a
    file of its own) and delete the retained copies beyond the newest ``keep``."""
    latest = Path(latest)
    if keep <= 0:
        return
    copy = latest.with_name(f"checkpoint_e{epoch:04d}_i{iteration:07d}.pt")
    with open(latest, "rb") as src:
        _replace_atomically(copy, lambda f: shutil.copyfileobj(src, f, 16 << 20))
    for old in retained_checkpoints(latest.parent)[keep:]:
        old.unlink(missing_ok=True)


def resumable_files(folder: str | Path) -> list[Path]:
    """What a run can resume from, in the order tried: ``latest.pt``, the retained checkpoints
    (newest first), ``best.pt``; those that exist."""
    folder = Path(folder)
    names = [folder / "latest.pt", *retained_checkpoints(folder), folder / "best.pt"]
    return [p for p in names if p.is_file()]


def load_resumable(folder: str | Path) -> tuple[dict[str, Any], Path]:
    """The checkpoint a run in ``folder`` resumes from and its path: ``latest.pt`` or, when it is
    missing or unreadable (truncated, empty), the newest readable of :func:`resumable_files`, with
    a warning naming both. None readable is a :class:`CheckpointError` listing each file's fault,
    never a fresh start."""
    faults: list[str] = []
    folder = Path(folder)
    if not (folder / "latest.pt").is_file():
        faults.append(f"no checkpoint at {folder / 'latest.pt'}")
    for path in resumable_files(folder):
        try:
            ckpt = load_checkpoint(path)
        except CheckpointError as e:
            faults.append(str(e))
            continue
        if faults:
            log.warning("%s; resuming from %s instead (epoch %d, iteration %d): the iterations after it are trained "
                        "again", faults[0], path, ckpt.get("epoch", -1), ckpt.get("iteration", -1))  # fmt: skip
        return ckpt, path
    raise CheckpointError(f"nothing readable to resume in {folder}: " + "; ".join(faults))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint file, read with ``weights_only=True``; :class:`CheckpointError` names the file
    and the cause when it is missing, empty, truncated or holds more than tensors and containers."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): not a checkpoint (an interrupted copy or save?)")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        detail = next((line.strip() for line in str(e).splitlines() if "GLOBAL" in line), "")
        raise CheckpointError(
            f"{path} is not a seqctx checkpoint: it stores Python objects beyond tensors and plain containers "
            f"({detail or 'not loadable with weights_only=True'}); seqctx reads the latest.pt/best.pt that "
            "`seqctx train` writes (fairseq checkpoints belong to `seqctx mt evaluate` and fairseq-generate)"
        ) from None
    except Exception as e:  # RuntimeError, EOFError, KeyError ('invalid load key' of a text file), ...
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint (truncated, or another format): {type(e).__name__}: {e}"
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a checkpoint (a dict of tensors)")
    return obj
