"""One run per work folder: ``run.lock`` names the process that trains there (host, pid, its start
time, the command) and is released when the run ends.

A lock left by a process that died without releasing it (SIGKILL, a lost node) is stale and taken
over: on this host when that process no longer exists (or the pid now belongs to another process);
from another host (a shared file system) when its heartbeat stops, since the holder touches the file
every :data:`HEARTBEAT_S` seconds and a lock untouched for :data:`STALE_AFTER_S` is taken over (a
requeued job whose predecessor was killed a moment ago waits that long; one whose predecessor
still runs is refused).

A takeover is atomic: contenders remove a stale lock one at a time, under a mutex file created
exclusively (``run.lock.takeover``), and only while the lock is still the very file they judged
stale (inode and record); then they race to create theirs, which one hard link wins. So of any
number of contenders for one stale lock exactly one wins, also across hosts that judged it stale
in the same second. (A mutex left by a process that died inside those few operations is removed
after :data:`TAKEOVER_STALE_S` seconds.)
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from seqctx.errors import WorkDirError

log = logging.getLogger(__name__)

LOCK_NAME = "run.lock"
HEARTBEAT_S = 10.0
STALE_AFTER_S = 60.0
TAKEOVER_STALE_S = 30.0


def process_start(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot (``/proc/<pid>/stat`` field 22),
    None where that is not readable: with the pid it names one process, across pid reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def _alive_here(pid: int, start: int | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, another user's
    now = process_start(pid)
    return start is None or now is None or now == start


def _describe(holder: dict[str, Any]) -> str:
    return (f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since')} "
            f"({holder.get('command', '?')})")  # fmt: skip


class WorkDirLock:
    """``acquire()`` takes ``folder/run.lock`` or raises :class:`WorkDirError` naming the run
    that holds it; ``release()`` removes it (only when it is still this process's)."""

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / LOCK_NAME
        pid = os.getpid()
        self.me = {"host": socket.gethostname(), "pid": pid, "start": process_start(pid),
                   "since": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)}  # fmt: skip
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._made_folder = False

    def _read(self) -> dict[str, Any] | None:
        """The holder's record, with its file's inode as ``"_inode"``; None when there is no lock."""
        try:
            with open(self.path) as f:
                inode = os.fstat(f.fileno()).st_ino
                text = f.read()
        except FileNotFoundError:
            return None
        except OSError:
            return {}
        try:
            holder = json.loads(text)
        except ValueError:
            holder = {}  # being written, or garbage: judged by its age
        return {**holder, "_inode": inode} if isinstance(holder, dict) else {"_inode": inode}

    def _take_over(self, holder: dict[str, Any]) -> None:
        """Remove the stale lock ``holder`` read, one contender at a time: under the takeover mutex
        (``run.lock.takeover``, created exclusively), the lock is removed only while it is still
        the file judged stale (same inode and record); then contenders race to create theirs, and
        one link wins."""
        mutex = self.path.with_name(f"{LOCK_NAME}.takeover")
        deadline = time.monotonic() + TAKEOVER_STALE_S
        while True:
            try:
                os.close(os.open(mutex, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                break
            except FileExistsError:
                try:
                    age = time.time() - mutex.stat().st_mtime
                except FileNotFoundError:
                    continue
                if age > TAKEOVER_STALE_S:  # its holder died within the few operations below
                    mutex.unlink(missing_ok=True)
                elif time.monotonic() > deadline:
                    return
                time.sleep(0.01)
        try:
            if self._read() == holder:
                log.warning("%s: taking over the lock of a run that is gone (%s)", self.path.parent,
                            _describe(holder))  # fmt: skip
                self.path.unlink(missing_ok=True)
        finally:
            mutex.unlink(missing_ok=True)

    def _create(self) -> bool:
        """Create the lock atomically (a hard link of a complete file: safe on NFS too)."""
        tmp = self.path.with_name(f"{LOCK_NAME}.{self.me['host']}.{self.me['pid']}")
        tmp.write_text(json.dumps(self.me))
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def _stale(self, holder: dict[str, Any]) -> bool:
        """Whether the holder is gone; for another host's lock, waits up to :data:`STALE_AFTER_S`
        for its heartbeat."""
        if holder.get("host") == self.me["host"] and isinstance(holder.get("pid"), int):
            return not _alive_here(holder["pid"], holder.get("start"))
        deadline = time.monotonic() + STALE_AFTER_S + HEARTBEAT_S
        waited = False
        while True:
            try:
                age = time.time() - self.path.stat().st_mtime
            except FileNotFoundError:
                return True
            if age > STALE_AFTER_S:
                return True
            if time.monotonic() > deadline:
                return False
            if not waited:
                log.info("%s is held by %s; waiting up to %.0f s for its heartbeat to stop", self.path,
                         _describe(holder), STALE_AFTER_S)  # fmt: skip
                waited = True
            time.sleep(min(1.0, STALE_AFTER_S / 10))

    def acquire(self) -> None:
        self._made_folder = not self.path.parent.exists()  # removed again by release() if still empty
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            if self._create():
                self._start_heartbeat()
                return
            holder = self._read()
            if holder is None:
                continue  # released meanwhile
            if not self._stale(holder):
                raise WorkDirError(
                    f"{self.path.parent} is in use by another run: {_describe(holder)}; this one "
                    f"({_describe(self.me)}) stops. Wait for it to end, or use another --work-dir (if that process "
                    f"is gone, delete {self.path})"
                )
            self._take_over(holder)
        raise WorkDirError(f"could not take {self.path}: other runs keep taking it; use another --work-dir")

    def _start_heartbeat(self) -> None:
        def beat() -> None:
            failing = False
            while not self._stop.wait(HEARTBEAT_S):
                try:
                    os.utime(self.path)
                except OSError as e:  # a file server's hiccup: said once, tried again at the next beat
                    if not failing:
                        log.warning("%s: the heartbeat could not touch the lock (%s); retrying every %.0f s (another "
                                    "host takes the folder over after %.0f s without one)", self.path, e,
                                    HEARTBEAT_S, STALE_AFTER_S)  # fmt: skip
                    failing = True
                    continue
                if failing:
                    log.warning("%s: the heartbeat touches the lock again", self.path)
                failing = False

        self._heartbeat = threading.Thread(target=beat, name="seqctx-lock-heartbeat", daemon=True)
        self._heartbeat.start()

    def release(self) -> None:
        if self._heartbeat is None:
            return
        self._stop.set()
        self._heartbeat.join()
        self._heartbeat = None
        holder = self._read()
        if holder and holder.get("pid") == self.me["pid"] and holder.get("host") == self.me["host"]:
            self.path.unlink(missing_ok=True)
        if self._made_folder and not any(self.path.parent.iterdir()):
            self.path.parent.rmdir()  # a run refused before writing anything leaves no folder behind
