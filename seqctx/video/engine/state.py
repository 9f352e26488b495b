"""The run's state as one versioned record: what ``latest.pt`` says about where a run stands, and
what a resume reads.

An epoch is a stream of global batches (:class:`~.builders.EpochSampler`): the first
``samples_seen`` items of the epoch's permutation are trained, whatever number of processes
trained them, so a run stopped on ``W`` processes continues on ``W'`` with each remaining video
exactly once, as long as the global batch (``data.batch_size`` x processes) stays the same: the
iterations, and so the learning rate at every step, are then those of a run never stopped.
``validated`` says whether the finished epoch ``epoch`` has had the validation it is due, so a
stop during validation (or before it) is made good on resume.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from seqctx.errors import CheckpointError

STATE_VERSION = 2  # 1: checkpoints before the record (no samples_seen, world_size, validated)


@dataclass
class RunState:
    epoch: int = 0  # epochs finished
    iteration: int = 0  # global batches trained in epoch `epoch` (0 at an epoch's end)
    samples_seen: int = 0  # items of the epoch's stream trained: iteration x global_batch
    world_size: int = 1  # processes that trained them
    global_batch: int = 0  # data.batch_size x world_size
    validated: bool = True  # epoch `epoch` had the validation it is due (or none is due)
    best_top1: float = -1.0
    train_loss: float | None = None  # the last finished epoch's
    metrics_lines: int = 0  # lines of metrics.jsonl written up to this point

    def to_checkpoint(self) -> dict[str, Any]:
        """The fields as top-level checkpoint entries, with ``state_version``."""
        return {"state_version": STATE_VERSION, **asdict(self)}

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> RunState:
        """The state of a checkpoint of any version (version 1: the world size from its RNG
        states, the global batch from its config, validated)."""
        version = ckpt.get("state_version", 1)
        if version > STATE_VERSION:
            raise CheckpointError(
                f"the checkpoint's run state is version {version}, newer than this seqctx reads ({STATE_VERSION}): "
                "resume it with the seqctx that wrote it"
            )
        known = {f.name for f in fields(cls)}
        state = cls(**{k: v for k, v in ckpt.items() if k in known})
        if version == 1:
            rng = ckpt.get("rng")
            state.world_size = len(rng) if isinstance(rng, list) else 1
            state.global_batch = int(ckpt.get("config", {}).get("data", {}).get("batch_size", 0)) * state.world_size
            state.samples_seen = state.iteration * state.global_batch
        return state
