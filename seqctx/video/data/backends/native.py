"""What native decoders (FFmpeg, decord's C++ logger) write to file descriptor 2, caught for an
error message in words instead of log lines leaking into the terminal."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence


@contextlib.contextmanager
def native_stderr() -> Iterator[list[str]]:
    """Catch what native code writes to file descriptor 2 for the duration of the block; the
    lines are in the yielded list afterwards."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines += tmp.read().decode("utf-8", "replace").splitlines()


# "[13:20:55] src/x.cc:83: ERROR opening: PATH, " or "[13:20:55] src/x.cc:270: [PATH] "
_DECORD_LOG = re.compile(r"^\[[\d:]+\] \S+: (?:ERROR \w+: [^,]*, |\[[^\]]*\] )?")


def native_reason(lines: Sequence[str], fallback: str) -> str:
    """The last line native code logged, without decord's time/source prefix; ``fallback`` when silent."""
    words = [_DECORD_LOG.sub("", line).strip() for line in lines if line.strip()]
    return words[-1] if words else fallback
