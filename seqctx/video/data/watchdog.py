"""Decoding with a time limit: a decoder that hangs in native code never stalls a run.

decord's ``get_batch`` can spin forever on a file whose container over-reports its frame count
(dmlc/decord#373); no Python exception reaches such a loop, and in a distributed run every rank
then waits for the stuck one until the collective's timeout. :func:`open_guarded` opens and decodes
in a helper process (one per process that reads videos: each DataLoader worker, or the main
process without workers), forked on first use and fed over a socket. A call that takes longer
than ``timeout`` seconds kills the helper and raises :class:`~.decode.VideoError` naming the
video, which the datasets' ``on_error`` policy then handles like any unreadable video (training
replaces it, evaluation leaves it out and reports it); the next video starts a new helper.

The helper is forked with ``os.fork`` (DataLoader workers are daemonic processes, which
``multiprocessing`` forbids to have children), asks the kernel to kill it when its parent dies,
and sends frames back as raw bytes (one copy of the decoded frames, small beside decoding them).
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path

import torch

from .decode import VideoError, VideoSource, open_video

_PR_SET_PDEATHSIG = 1


def _serve(conn: Connection) -> None:
    """The helper's loop: ``("open", path, backend, threads, short_side)`` -> ``(num_frames,
    access)``; ``("decode", unique)`` -> the frames' shape, then their bytes. Errors go back as
    ``("error", message)``."""
    source: VideoSource | None = None
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        try:
            if request[0] == "open":
                source = open_video(*request[1:])
                conn.send(("ok", (source.num_frames, source.access)))
            else:
                assert source is not None
                frames = source.decode(request[1]).contiguous()
                conn.send(("ok", tuple(frames.shape)))
                conn.send_bytes(frames.numpy().reshape(-1).data)
        except Exception as e:  # every failure goes back to the caller, in words
            conn.send(("error", f"{type(e).__name__}: {e}" if not isinstance(e, VideoError) else str(e)))


class DecodeHelper:
    """The helper process of this process; restarted after a kill, and after a fork (a DataLoader
    worker must not share its parent's helper)."""

    def __init__(self) -> None:
        self.pid = 0
        self.owner = 0  # the process that forked the helper
        self.conn: Connection | None = None

    def _start(self) -> None:
        ours, theirs = socket.socketpair()
        pid = os.fork()
        if pid == 0:  # the helper
            ours.close()
            try:
                ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # dies with its parent (Linux)
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the parent, which ends the helper
                _serve(Connection(theirs.detach()))
            finally:
                os._exit(0)
        theirs.close()
        self.pid, self.owner, self.conn = pid, os.getpid(), Connection(ours.detach())

    def stop(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.pid and self.owner == os.getpid():
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        self.pid = 0

    def call(self, request: tuple, path: str | Path, timeout: float) -> object:
        """Send ``request``; its answer, or :class:`VideoError` when none comes within ``timeout``
        seconds (the helper is then killed) or the helper reports an error."""
        if self.conn is None or self.owner != os.getpid():
            self.conn = None  # a forked copy of the parent's helper: start our own
            self._start()
        assert self.conn is not None
        try:
            self.conn.send(request)
            if not self.conn.poll(timeout):
                self.stop()
                raise VideoError(
                    f"{path}: decoding took longer than {timeout:g} s (data.decode_timeout); the decoder was "
                    "stopped and the video treated as unreadable"
                )
            status, value = self.conn.recv()
            if status == "error":
                raise VideoError(str(value))
            if request[0] == "decode":
                data = bytearray(self.conn.recv_bytes())
                return torch.frombuffer(data, dtype=torch.uint8).view(value)
            return value
        except (EOFError, OSError) as e:  # the helper died (e.g. a crash in native code)
            self.stop()
            raise VideoError(f"{path}: the decoder process died while reading it ({e or type(e).__name__})") from e


_HELPER = DecodeHelper()


class GuardedSource(VideoSource):
    """A video opened and decoded in this process's :class:`DecodeHelper`, each call within
    ``timeout`` seconds."""

    def __init__(
        self, path: str | Path, backend: str, num_threads: int, short_side: int | None, timeout: float
    ) -> None:
        self.path, self.timeout = path, timeout
        request = ("open", os.path.abspath(path), backend, num_threads, short_side)  # the helper keeps its own cwd
        self.num_frames, self.access = _HELPER.call(request, path, timeout)  # type: ignore[misc]

    def decode(self, unique: list[int]) -> torch.Tensor:
        return _HELPER.call(("decode", unique), self.path, self.timeout)  # type: ignore[return-value]


def open_guarded(
    path: str | Path,
    backend: str = "decord",
    num_threads: int = 1,
    short_side: int | None = None,
    timeout: float | None = None,
) -> VideoSource:
    """:func:`~.decode.open_video`, with opening and each decode bounded by ``timeout`` seconds
    when given (in the helper process); in this process without one."""
    if timeout is None:
        return open_video(path, backend, num_threads, short_side)
    if timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout}")
    return GuardedSource(path, backend, num_threads, short_side, timeout)


__all__: Sequence[str] = ("DecodeHelper", "GuardedSource", "open_guarded")
