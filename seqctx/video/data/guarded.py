"""Decoding under a time limit: a decoder that hangs in native code never stalls a run.

decord's ``get_batch`` can spin forever on a file whose container over-reports its frame count
(dmlc/decord#373); no Python exception reaches such a loop, and in a distributed run every rank
then waits for the stuck one until the collective's timeout. :func:`open_guarded` opens and decodes
in a helper process (one per process that reads videos: each DataLoader worker, or the main
process without workers), forked on first use and fed over a socket. A call that takes longer
than ``timeout`` seconds kills the helper and raises :class:`~.decode.VideoError` naming the
video, which the datasets' ``on_error`` policy then handles like any unreadable video (training
replaces it, evaluation leaves it out and reports it); the next call starts a new helper.

The protocol is stateless: each request carries the video's path and decoding options and an id,
and its answer the same id. The helper keeps the last video it opened only as a cache, so a
helper restarted between two calls (after a timeout or a crash) simply opens the video again,
and two sources interleaved never see each other's frames. One call at a time goes through a
process's helper (a lock: any thread may call); a call interrupted between its request and its
answer (a signal, Ctrl-C) kills the helper, so no stale answer is left to the next caller, and an
answer with another id is a :class:`VideoError` for that video alone (the helper is restarted).

Decoded frames come back through shared memory, not the socket: the helper keeps a memory file
(``memfd``) sized to the last answer, copies the frames into it and says their shape; the fd goes
to the caller once per file (``SCM_RIGHTS``), who maps it and copies the frames out. The socket's
copies (into the kernel, out of it, into a tensor) cost 4.5 ms for a dense Something-Something
clip, 10% of its reading; the shared file 1.8 ms. A file is replaced when an answer outgrows it or
needs under a quarter of it, so one large video does not pin its memory for the worker's life.

The helper is forked by a thread of its own that lives as long as the process (Linux's
``PR_SET_PDEATHSIG`` fires when the *thread* that forked a process ends, so a helper forked by a
short-lived thread would be killed with it), asks the kernel to kill it when that thread's process
dies, decodes with one torch thread, ignores the stop signals (its parent ends it), and is killed
and reaped by :func:`stop_helper`: at a timeout, at exit (a DataLoader worker's too) and in
:func:`seqctx.stopping.end_children`.
"""

from __future__ import annotations

import ctypes
import itertools
import mmap
import os
import queue
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Sequence
from multiprocessing.connection import Connection
from multiprocessing.util import Finalize
from typing import Any

import torch

from seqctx.stopping import ignore_stop_signals, on_end, stop_signals_held

from .backends.base import Blob, Media
from .decode import VideoError, VideoSource, open_video

_PR_SET_PDEATHSIG = 1
Options = tuple[str | Blob, dict[str, Any]]  # (absolute path or a video in memory, open_video's keyword arguments)


class _Shared:
    """A memory file shared by the helper and its caller: ``size`` bytes mapped in this process."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd, self.size = fd, size
        self.map = mmap.mmap(fd, size)

    @classmethod
    def create(cls, size: int) -> _Shared:
        """A new file of ``size`` bytes: a Linux memory file, elsewhere an unlinked temporary file."""
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create("seqctx-frames", os.MFD_CLOEXEC)
        else:
            with tempfile.TemporaryFile() as f:
                fd = os.dup(f.fileno())
        os.ftruncate(fd, size)
        return cls(fd, size)

    def fits(self, size: int) -> bool:
        return size <= self.size <= 4 * size

    def view(self, shape: tuple[int, ...]) -> torch.Tensor:
        """The first bytes of the file as uint8 ``shape`` (shares its memory: copy before the next answer)."""
        return torch.frombuffer(self.map, dtype=torch.uint8, count=torch.Size(shape).numel()).view(shape)

    def close(self) -> None:
        self.map.close()
        os.close(self.fd)


def _serve(conn: Connection, sock: socket.socket) -> None:
    """The helper's loop: ``(id, options, unique)`` -> ``(id, "ok", (num_frames, access))`` for
    ``unique=None`` (open), else ``(id, "ok", (shape, new))`` with the frames in the shared file,
    followed on ``sock`` by the file's fd when it is ``new``; a failure -> ``(id, "error", message)``."""
    cached: tuple[Options, VideoSource] | None = None
    shared: _Shared | None = None
    while True:
        try:
            rid, options, unique = conn.recv()
        except (EOFError, OSError):
            return
        try:
            if cached is None or cached[0] != options:
                cached = None  # a failed open leaves nothing behind
                cached = (options, open_video(options[0], **options[1]))
            source = cached[1]
            if unique is None:
                conn.send((rid, "ok", (source.num_frames, source.access)))
                continue
            frames = source.decode(unique)
            new = shared is None or not shared.fits(frames.numel())
            if new:
                if shared is not None:
                    shared.close()
                shared = None
                shared = _Shared.create(frames.numel() + frames.numel() // 4)
            assert shared is not None
            shared.view(tuple(frames.shape)).copy_(frames)
            conn.send((rid, "ok", (tuple(frames.shape), new)))
            if new:
                socket.send_fds(sock, [b"\0"], [shared.fd])
        except Exception as e:  # every failure goes back to the caller, in words
            conn.send((rid, "error", str(e) if isinstance(e, VideoError) else f"{type(e).__name__}: {e}"))


def _helper_main(sock: socket.socket) -> None:
    """In the forked helper: die with the process that forked it, leave the stop signals to it,
    one torch thread, serve."""
    try:
        if sys.platform.startswith("linux"):  # elsewhere it ends when its socket closes, unless stuck in C
            ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        ignore_stop_signals()
        torch.set_num_threads(1)
        _serve(Connection(os.dup(sock.fileno())), sock)
    finally:
        os._exit(0)


class _Forker:
    """A daemon thread that forks the helpers of one process, so that ``PR_SET_PDEATHSIG`` is tied
    to a thread that lives as long as the process."""

    def __init__(self) -> None:
        self.owner = os.getpid()
        self.requests: queue.Queue[tuple[socket.socket, queue.Queue[int]]] = queue.Queue()
        threading.Thread(target=self._run, name="seqctx-decode-forker", daemon=True).start()

    def _run(self) -> None:
        with stop_signals_held():  # for good in this thread: each helper starts with them held
            self._serve()

    def _serve(self) -> None:
        while True:
            theirs, reply = self.requests.get()
            pid = os.fork()
            if pid == 0:
                _helper_main(theirs)
            reply.put(pid)

    def fork(self, theirs: socket.socket) -> int:
        reply: queue.Queue[int] = queue.Queue()
        self.requests.put((theirs, reply))
        return reply.get()


class DecodeHelper:
    """The helper process of this process; started on first use, after a kill, and after a fork
    (a DataLoader worker must not share its parent's helper)."""

    def __init__(self) -> None:
        self.pid, self.owner = 0, 0  # the helper, and the process that forked it
        self.conn: Connection | None = None
        self.sock: socket.socket | None = None  # the same socket, for the shared file's fd
        self.shared: _Shared | None = None  # the helper's shared file, mapped here
        self.lock = threading.Lock()
        self.ids = itertools.count(1)
        self._forker: _Forker | None = None

    def _start(self) -> None:
        if self._forker is None or self._forker.owner != os.getpid():
            self._forker = _Forker()  # threads do not survive a fork: each process has its own
            Finalize(self, self.stop, exitpriority=100)  # ends it when a DataLoader worker exits
        ours, theirs = socket.socketpair()
        pid = self._forker.fork(theirs)
        theirs.close()
        self.pid, self.owner, self.conn, self.sock = pid, os.getpid(), Connection(os.dup(ours.fileno())), ours

    def stop(self) -> None:
        """Kill and reap the helper (this process's own; a forked copy's is left to its owner)."""
        for held in (self.conn, self.sock, self.shared):
            if held is not None:
                held.close()
        self.conn, self.sock, self.shared = None, None, None
        if self.pid and self.owner == os.getpid():
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        self.pid = 0

    def _frames(self, shape: tuple[int, ...], new: bool) -> torch.Tensor:
        """The answer's frames, copied out of the shared file (mapping a file the helper sends)."""
        assert self.sock is not None
        if new:
            _, fds, _, _ = socket.recv_fds(self.sock, 1, 1)
            if not fds:
                raise EOFError("no shared memory came with the frames")
            if self.shared is not None:
                self.shared.close()
            self.shared = None
            self.shared = _Shared(fds[0], os.fstat(fds[0]).st_size)
        assert self.shared is not None
        return self.shared.view(shape).clone()

    def call(self, options: Options, unique: list[int] | None, timeout: float) -> object:
        """Open ``options``' video (``unique=None``: its ``(num_frames, access)``) or decode its
        frames ``unique``, within ``timeout`` seconds; :class:`VideoError` naming the video when
        no answer comes in time (the helper is killed), the helper reports an error, dies, or
        answers another request."""
        path = options[0]
        with self.lock:
            if self.conn is None or self.owner != os.getpid():
                self.conn, self.sock, self.shared = None, None, None  # a forked copy of the parent's: start our own
                self._start()
            assert self.conn is not None
            rid = next(self.ids)
            finished = False
            try:
                self.conn.send((rid, options, unique))
                if not self.conn.poll(timeout):
                    raise VideoError(
                        f"{path}: decoding took longer than {timeout:g} s (data.decode_timeout); the decoder was "
                        "stopped and the video treated as unreadable"
                    )
                answer, status, value = self.conn.recv()
                if answer != rid:
                    raise VideoError(f"{path}: the decoder process answered request {answer}, not {rid}; it was "
                                     "restarted and the video treated as unreadable")  # fmt: skip
                if status == "error":
                    finished = True
                    raise VideoError(str(value))
                if unique is not None:
                    value = self._frames(*value)  # type: ignore[misc]
                finished = True
                return value
            except (EOFError, OSError) as e:  # the helper died (a crash in native code, a kill)
                raise VideoError(f"{path}: the decoder process died while reading it ({e or type(e).__name__})") from e
            finally:
                if not finished:  # no clean answer: nothing may be left in the socket for the next call
                    self.stop()


_HELPER = DecodeHelper()


def stop_helper() -> None:
    """Kill and reap this process's decode helper (the next call starts a new one)."""
    with _HELPER.lock:
        _HELPER.stop()


on_end(stop_helper)


class GuardedSource(VideoSource):
    """A video opened and decoded in this process's :class:`DecodeHelper`, each call within
    ``timeout`` seconds; every call names the video (no state in the helper)."""

    def __init__(self, path: Media, options: Options, timeout: float) -> None:
        self.path, self.timeout = path, timeout
        self.options = options
        self.num_frames, self.access = _HELPER.call(self.options, None, timeout)  # type: ignore[misc]

    def decode(self, unique: list[int]) -> torch.Tensor:
        return _HELPER.call(self.options, list(unique), self.timeout)  # type: ignore[return-value]


def open_guarded(path: Media, timeout: float | None = None, **options: Any) -> VideoSource:
    """:func:`~.decode.open_video` ``(path, **options)``, with opening and each decode bounded by
    ``timeout`` seconds when given (in the helper process); in this process without one."""
    if timeout is None:
        return open_video(path, **options)
    if timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout}")
    where = path if isinstance(path, Blob) else os.path.abspath(path)  # the helper's working folder is its own
    return GuardedSource(path, (where, options), timeout)


__all__: Sequence[str] = ("DecodeHelper", "GuardedSource", "open_guarded", "stop_helper")
