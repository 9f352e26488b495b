"""Stopping: the one place where stop signals become requests and where every child process of a
``seqctx`` command (DataLoader workers, conversion pools, decode helpers) is started and ended.

- Children ignore the stop signals (:func:`ignore_stop_signals`, the ``worker_init_fn`` of every
  loader :func:`make_loader` builds, the initializer of :func:`worker_pool`). A signal to the
  whole process group (``timeout``, Ctrl-C in a terminal, a scheduler signalling every process
  of a job) therefore reaches the main process alone in effect: it decides what to do, and ends
  its children itself. PyTorch's own worker handler would end a worker on SIGTERM, and the run
  would fail with ``DataLoader worker ... is killed by signal`` before it could save.
- Since children ignore SIGTERM, nothing but their parent can end them. :func:`end_children`
  does, on every way out of a command (the CLI calls it in ``finally``, and it runs at exit):
  loader iterators are shut down, helpers stopped (:func:`on_end`), and what is still alive after
  :data:`GRACE_S` seconds is killed and reaped. Without it the interpreter's exit would send
  SIGTERM to the workers and wait for them for ever.
- In training, :class:`StopSignals` turns ``train.stop_signals`` into a request that every rank
  acts on at the same optimiser-step boundary (:class:`Preempted`, exit
  :data:`PREEMPTED_EXIT_CODE`). Elsewhere (``test``, ``predict``, ``analyze``, ``data``),
  :func:`stop_on_signals` makes SIGTERM and SIGHUP raise :class:`Stopped` in the main thread, as
  Ctrl-C raises ``KeyboardInterrupt``: the command unwinds, ends its children and exits with
  ``128 + signal`` (143 for SIGTERM, 130 for Ctrl-C) after one line.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing as mp
import signal
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from seqctx.errors import ConfigError

log = logging.getLogger(__name__)

PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL (sysexits.h): stopped on request, resumable; not a failure
GRACE_S = 2.0  # seconds children get to end on their own before they are killed
CHILD_IGNORES = ("SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2")  # what children leave to their parent


class Preempted(Exception):
    """The run stopped on a signal after saving ``latest.pt`` at ``(epoch, iteration)``."""

    def __init__(self, signal_name: str, epoch: int, iteration: int, checkpoint: str, phase: str = "training") -> None:
        super().__init__(
            f"stopped by {signal_name} at epoch {epoch + 1}, iteration {iteration} ({phase}); {checkpoint} holds "
            "that point: continue with `seqctx train CONFIG --resume auto`"
        )
        self.signal_name, self.epoch, self.iteration, self.checkpoint = signal_name, epoch, iteration, checkpoint


class Stopped(BaseException):
    """A stop signal outside training (:func:`stop_on_signals`); like ``KeyboardInterrupt`` it is
    no ``Exception``, so no ``except Exception`` swallows it."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def signal_number(name: str) -> signal.Signals:
    """``"SIGTERM"`` or ``"TERM"`` -> ``signal.SIGTERM``; :class:`ConfigError` for other names."""
    full = name if name.startswith("SIG") else f"SIG{name}"
    if full in ("SIGKILL", "SIGSTOP") or not isinstance(getattr(signal, full, None), signal.Signals):
        raise ConfigError(
            f"train.stop_signals: {name!r} is not a signal a process can catch; use e.g. SIGTERM, SIGUSR1, SIGUSR2"
        )
    return getattr(signal, full)


def _child_ignores() -> list[signal.Signals]:
    return [getattr(signal, name) for name in CHILD_IGNORES]


@contextmanager
def stop_signals_held() -> Iterator[None]:
    """Hold the stop signals back in this thread while inside, around the start of children: a
    child starts with them blocked, so that one sent to the whole group before the child ignores
    them stays pending, and is dropped when it does (:func:`ignore_stop_signals`), where it would
    otherwise kill the child in its first milliseconds; this process gets its own on the way out."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _child_ignores())
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def ignore_stop_signals(*_: object) -> None:
    """In a child process (a DataLoader ``worker_init_fn``, a pool's initializer, a decode
    helper): ignore the signals its parent acts on (:data:`CHILD_IGNORES`), then let through any
    held back (:func:`stop_signals_held`): the parent ends it. A child, or a background thread
    of it, that loses its connection because the parent left (a loader worker reading its index
    queue, the resource sharer that hands tensors to the parent, interrupted mid-transfer by a
    stop) ends without a traceback: the parent says why the command ended."""
    signums = _child_ignores()
    for signum in signums:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, signums)
    threading.excepthook = _quiet_thread_when_parent_left
    sys.excepthook = _quiet_when_parent_left


def _quiet_when_parent_left(kind: type[BaseException], error: BaseException, trace: Any) -> None:
    if not issubclass(kind, ConnectionError | EOFError):
        sys.__excepthook__(kind, error, trace)


def _quiet_thread_when_parent_left(args: threading.ExceptHookArgs) -> None:
    if not issubclass(args.exc_type, ConnectionError | EOFError):
        threading.__excepthook__(args)


class _ChainedInit:
    """``ignore_stop_signals`` first, then the loader's own ``worker_init_fn``."""

    def __init__(self, then: Callable[[int], None] | None) -> None:
        self.then = then

    def __call__(self, worker_id: int) -> None:
        ignore_stop_signals()
        if self.then is not None:
            self.then(worker_id)


class ManagedLoader(DataLoader):
    """A DataLoader whose workers ignore the stop signals and whose iterators
    :func:`end_children` shuts down."""

    def _get_iterator(self) -> Any:
        if self.num_workers == 0:
            return super()._get_iterator()
        with stop_signals_held():  # the workers start here
            iterator = super()._get_iterator()
        _ITERATORS.add(iterator)
        return iterator


def make_loader(dataset: Any, num_workers: int = 0, **kwargs: Any) -> DataLoader:
    """The one way seqctx builds a DataLoader (training, evaluation, ``data check``): a
    :class:`ManagedLoader` whose workers run :func:`ignore_stop_signals` before any
    ``worker_init_fn`` given."""
    if num_workers:
        kwargs["worker_init_fn"] = _ChainedInit(kwargs.get("worker_init_fn"))
    return ManagedLoader(dataset, num_workers=num_workers, **kwargs)


def _pool_worker_init() -> None:
    """A pool worker ignores the stop signals but SIGTERM, which ends it at once (the default
    action, not the parent's handler it was forked with): ``Pool.terminate`` ends its workers with
    SIGTERM and then waits for them, so a worker that ignored it would never be joined."""
    ignore_stop_signals()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def worker_pool(workers: int) -> Any:
    """A fork pool of ``workers`` processes for work that holds no state worth saving (``data
    prepare``: an interrupted output is a ``.partial`` file, redone by a rerun). Ctrl-C reaches
    the parent alone; SIGTERM ends a worker at once. Use it as a context manager (its exit
    terminates the pool), and :func:`end_children` ends it on any way out."""
    with stop_signals_held():
        return mp.get_context("fork").Pool(workers, initializer=_pool_worker_init)


_ITERATORS: weakref.WeakSet = weakref.WeakSet()
_ENDERS: list[Callable[[], None]] = []


def on_end(stop: Callable[[], None]) -> None:
    """Register ``stop`` (e.g. the decode helper's) to be called by :func:`end_children`."""
    if stop not in _ENDERS:
        _ENDERS.append(stop)


def end_children(grace: float = GRACE_S) -> None:
    """End every child process of this one: shut down the DataLoader iterators of
    :class:`ManagedLoader` (a worker leaves once its current item is done), call the
    :func:`on_end` stoppers, then kill what is still alive after ``grace`` seconds and reap it.
    Safe to call more than once, and from ``atexit``."""
    for iterator in list(_ITERATORS):
        iterator._shutdown_workers()  # workers leave at their next index; the SIGCHLD watch is removed first
        _ITERATORS.discard(iterator)
    for stop in _ENDERS:
        stop()
    for child in mp.active_children():  # pools, and workers a shutdown could not end
        child.join(timeout=grace)
        if child.is_alive():
            child.kill()
            child.join()


atexit.register(end_children)  # after multiprocessing's own handler was registered, so it runs first


@contextmanager
def stop_on_signals(names: tuple[str, ...] = ("SIGTERM", "SIGHUP")) -> Iterator[None]:
    """While inside (in the main thread), the first of the signals ``names`` raises
    :class:`Stopped` where the main thread is, as Ctrl-C raises ``KeyboardInterrupt``; later ones
    change nothing (``timeout`` signals the command, then its whole group: a second raise would
    interrupt the cleanup the first one started); the previous handlers come back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised = False

    def handle(signum: int, frame: FrameType | None) -> None:
        nonlocal raised
        if not raised:
            raised = True
            raise Stopped(signum)

    previous = {sig: signal.signal(sig, handle) for sig in map(signal_number, names)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class StopSignals:
    """While installed (a context manager), the signals in ``names`` request a stop instead of
    ending the process. ``group``: the process group to agree in (a gloo group on the CPU), None
    for the default one. The handler only records the request, so a second signal during a save
    changes nothing."""

    def __init__(self, names: list[str], group: Any = None) -> None:
        self.signals = [signal_number(n) for n in names]
        self.group = group
        self.received: str | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.received is None:
            self.received = name
            log.warning("%s received: the run stops at the next boundary after saving latest.pt", name)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            log.warning("training outside the main thread: %s end the process as usual",
                        ", ".join(s.name for s in self.signals))  # fmt: skip
            return self
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def agreed(self) -> str | None:
        """The signal's name when any rank received one (all ranks get the same answer), else None.
        Every rank must call it at the same points."""
        if not (dist.is_available() and dist.is_initialized()):
            return self.received
        names = [s.name for s in self.signals]
        code = torch.tensor([names.index(self.received) + 1 if self.received in names else 0])
        dist.all_reduce(code, op=dist.ReduceOp.MAX, group=self.group)
        return names[int(code) - 1] if int(code) else None
