"""Distributed data parallel under ``torchrun`` (gloo on CPU, nccl on GPU), on one or many nodes;
one process when ``WORLD_SIZE`` is not set. Only rank 0 writes files.

torchrun's ``LOCAL_RANK`` picks this process's GPU; rank and world size come from
``torch.distributed`` once the process group is up (whatever launched it: torchrun, SLURM's srun
through torchrun, several nodes with ``--rdzv-backend c10d``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from seqctx.errors import UserError


def restart_store() -> dist.Store | None:
    """The store a process group restarted by ``torchrun --max-restarts`` meets in, None for a first
    start. torchrun's own store serves every attempt of a job, so a restarted group would read the
    previous attempt's addresses from it and fail to connect (pytorch/pytorch#135712; gloo and
    NCCL alike): on one node the attempt number (``TORCHELASTIC_RESTART_COUNT``) keys a fresh
    namespace. On several nodes the agents count restarts each on their own, so that key is not
    shared: there torchrun must not share its store (``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` with
    ``--rdzv-backend c10d``, as ``scripts/slurm_train.sh`` sets), and a restart without it is a
    :class:`UserError` saying so."""
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if attempt == 0 or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    if int(os.environ.get("GROUP_WORLD_SIZE", "1")) > 1:
        raise UserError(
            "torchrun restarted this job on several nodes with a store shared across attempts, where the restarted "
            "processes cannot meet (pytorch/pytorch#135712): launch with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 and "
            "--rdzv-backend c10d (see scripts/slurm_train.sh)"
        )
    agent = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False)
    return dist.PrefixStore(f"seqctx/attempt_{attempt}", agent)


def init_distributed(device: torch.device) -> tuple[int, int]:
    """``(rank, world_size)``; initialises the process group when launched by torchrun (also after
    an elastic restart: :func:`restart_store`). On CUDA the process's GPU becomes the current
    device first, so that no rank opens a context on GPU 0."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        store = restart_store()
        where: dict[str, Any] = {} if store is None else {"store": store, "rank": int(os.environ["RANK"]),
                                                          "world_size": world}  # fmt: skip
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=device, **where)
        else:
            dist.init_process_group("gloo", **where)
    return rank_and_world()


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the process group, ``(0, 1)`` without one."""
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def local_device(requested: str) -> torch.device:
    """``"auto"``: this process's GPU (``LOCAL_RANK``) when the machine has that many GPUs, else
    the CPU; ``"cuda"``: this process's GPU; anything else as given."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() and torch.cuda.device_count() > local_rank else "cpu"
    if requested == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(requested)


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """The sum of ``value`` over the processes (a copy)."""
    value = value.clone()
    if dist.is_initialized():
        dist.all_reduce(value)
    return value


def all_gather_objects(obj: Any) -> list[Any]:
    """``obj`` of every process, in rank order (``[obj]`` without a process group). Tensors in
    ``obj`` should be on the CPU."""
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def cpu_group() -> Any:
    """A gloo group for small agreements on the CPU (no GPU synchronisation); None where the
    default group is gloo or there is none. Every process must call it, once."""
    if not dist.is_initialized() or dist.get_backend() == "gloo":
        return None
    return dist.new_group(backend="gloo")


def on_main(action: Callable[[], None]) -> None:
    """Run ``action`` on rank 0 only; a :class:`UserError` it raises is raised on every process
    (the others would otherwise wait for rank 0 at their next collective)."""
    error = None
    if is_main():
        try:
            action()
        except UserError as e:
            error = e
    errors = all_gather_objects(error)
    if errors[0] is not None:
        raise errors[0]


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
