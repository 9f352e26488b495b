"""The processes of this machine as /proc lists them, for tests that check what a command leaves
behind."""

from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple


class Process(NamedTuple):
    pid: int
    state: str  # R, S, Z (a zombie: ended, not reaped), ...
    ppid: int
    pgid: int


def processes() -> Iterator[Process]:
    """Every process still listed in /proc (one that ends while read is left out)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        state, ppid, pgid = text[text.rindex(")") + 2 :].split()[:3]  # after the command name, which may hold spaces
        yield Process(int(stat.parent.name), state, int(ppid), int(pgid))
