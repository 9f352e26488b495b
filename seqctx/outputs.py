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
    return path


def output_folder(path: str | Path, option: str) -> Path:
    """``path`` as a folder to write into (made when missing): not an existing file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {path} is a file; name a folder (it is made when missing)")
    _writable_folder(path, option, path)
    return path


def _writable_folder(folder: Path, option: str, path: Path) -> None:
    for parent in [folder, *folder.parents]:
        if parent.exists() and not parent.is_dir():
            raise UserError(f"{option} {path}: {parent} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{option} {path}: cannot make the folder {folder} ({e.strerror or e})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"{option} {path}: the folder {folder} cannot be written")
