"""Where commands write: checked before any long work starts, so that an ``--out`` that cannot be
written is an error at once (a :class:`~seqctx.errors.UserError` naming it), not after an
evaluation whose results would then be lost."""

from __future__ import annotations

import os
from pathlib import Path

from seqctx.errors import UserError


def output_file(path: str | Path, option: str) -> Path:
    """``path`` as a file to write (its folder is made): not an existing folder, in a folder that
    is not a file and can be written."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path} is a folder; name a file to write (e.g. {path / 'out'}{path.suffix})")
    _writable_folder(path.parent, option, path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{option} {path}: cannot make the folder {path.parent} ({e.strerror or e})") from None
    return path


def output_folder(path: str | Path, option: str) -> Path:
    """``path`` as a folder to write into: not an existing file, and either a folder that can be
    written or one that can be made there (not made here: a command that fails before writing
    leaves nothing behind)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {path} is a file; name a folder (it is made when missing)")
    _writable_folder(path, option, path)
    return path


def _writable_folder(folder: Path, option: str, path: Path) -> None:
    """``folder``, or the nearest of its parents that exists, is a folder this process can write."""
    existing = next(p for p in [folder.absolute(), *folder.absolute().parents] if p.exists())
    if not existing.is_dir():
        raise UserError(f"{option} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{option} {path}: the folder {existing} cannot be written")
