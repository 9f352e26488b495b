"""Stopping a run cleanly on a cluster's signal (SLURM's ``--signal``, a scheduler's SIGTERM before
a preemption, torchrun forwarding its own SIGTERM to the workers).

:class:`StopSignals` turns the chosen signals (``train.stop_signals``) into a request; the trainer
asks :meth:`StopSignals.agreed` at every optimiser-step boundary, all ranks settle on the same
iteration (one small all-reduce on the CPU), the run saves ``latest.pt`` for that iteration and
raises :class:`Preempted`; ``seqctx train`` then exits with :data:`PREEMPTED_EXIT_CODE`. The
handler only records the request, so a second signal during the save changes nothing.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist

from seqctx.errors import ConfigError

log = logging.getLogger(__name__)

PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL (sysexits.h): stopped on request, resumable; not a failure


class Preempted(Exception):
    """The run stopped on a signal after saving ``latest.pt`` at ``(epoch, iteration)``."""

    def __init__(self, signal_name: str, epoch: int, iteration: int, checkpoint: str) -> None:
        super().__init__(
            f"stopped by {signal_name} at epoch {epoch + 1}, iteration {iteration}; {checkpoint} holds that iteration: "
            "continue with `seqctx train CONFIG --resume auto`"
        )
        self.signal_name, self.epoch, self.iteration, self.checkpoint = signal_name, epoch, iteration, checkpoint


def signal_number(name: str) -> signal.Signals:
    """``"SIGTERM"`` or ``"TERM"`` -> ``signal.SIGTERM``; :class:`ConfigError` for other names."""
    full = name if name.startswith("SIG") else f"SIG{name}"
    if full in ("SIGKILL", "SIGSTOP") or not isinstance(getattr(signal, full, None), signal.Signals):
        raise ConfigError(
            f"train.stop_signals: {name!r} is not a signal a process can catch; use e.g. SIGTERM, SIGUSR1, SIGUSR2"
        )
    return getattr(signal, full)


class IgnoreStopSignals:
    """A DataLoader ``worker_init_fn``: loader workers ignore the stop signals. PyTorch gives its
    workers a SIGTERM handler that ends them, so a signal to the whole process group (``timeout``,
    a scheduler signalling every process of a job) would kill them and fail the run before it
    saves; the main process stops and then shuts its workers down itself."""

    def __init__(self, names: list[str]) -> None:
        self.names = list(names)

    def __call__(self, worker_id: int) -> None:
        for sig in map(signal_number, self.names):
            signal.signal(sig, signal.SIG_IGN)


class StopSignals:
    """While installed (a context manager), the signals in ``names`` request a stop instead of
    ending the process. ``group``: the process group to agree in (a gloo group on the CPU), None
    for the default one."""

    def __init__(self, names: list[str], group: Any = None) -> None:
        self.signals = [signal_number(n) for n in names]
        self.group = group
        self.received: str | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.received is None:
            self.received = name
            log.warning("%s received: the run stops at the next iteration boundary after saving latest.pt", name)
        # a repeated signal is already being acted on: nothing else to do

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
        Every rank must call it at the same iterations."""
        if not (dist.is_available() and dist.is_initialized()):
            return self.received
        names = [s.name for s in self.signals]
        code = torch.tensor([names.index(self.received) + 1 if self.received in names else 0])
        dist.all_reduce(code, op=dist.ReduceOp.MAX, group=self.group)
        return names[int(code) - 1] if int(code) else None
