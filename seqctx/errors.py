"""Errors a user can act on: bad configs, data, checkpoints and work folders.

The ``seqctx`` command prints a :class:`UserError`'s message alone (no traceback) and exits with
code 2; anything else is a bug and keeps its traceback. Each subclass also derives from the
built-in exception a caller would expect (``ValueError``, ``FileNotFoundError``, ...), so code that
catches those keeps working.
"""

from __future__ import annotations

__all__ = ["CheckpointError", "ConfigError", "DataError", "UserError", "WorkDirError", "one_line"]


class UserError(Exception):
    """A mistake in what the user gave (a config, a path, data): the message says what and how to fix it."""


class ConfigError(UserError, ValueError):
    """A config key with an unknown name, a wrong type or a value outside its choices."""


class DataError(UserError, ValueError):
    """An annotation file, label map or data folder that cannot be used as given."""


class CheckpointError(UserError, ValueError):
    """A file that is not a readable seqctx checkpoint, or one that does not fit the request."""


class WorkDirError(UserError, FileExistsError):
    """A work folder that holds another run (or none to resume)."""


def one_line(error: BaseException) -> str:
    """The message of ``error`` without the worker traceback a DataLoader puts into the errors it
    re-raises from its workers (``Caught X in DataLoader worker process N. Original Traceback
    ...``): the original message alone."""
    text = str(error)
    if "Original Traceback" not in text:
        return text
    last = text.rstrip().splitlines()[-1]
    prefix = f"{type(error).__module__}.{type(error).__name__}: "
    for start in (prefix, f"{type(error).__name__}: "):
        if last.startswith(start):
            return last[len(start) :]
    return last
