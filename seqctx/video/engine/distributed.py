"""Distributed data parallel under ``torchrun`` (gloo on CPU, nccl on GPU), on one or many nodes;
one process when ``WORLD_SIZE`` is not set. Only rank 0 writes files.

torchrun's ``LOCAL_RANK`` picks this process's GPU; rank and world size come from
``torch.distributed`` once the process group is up (whatever launched it: torchrun, SLURM's srun
through torchrun, several nodes with ``--rdzv-backend c10d``).
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def init_distributed(device: torch.device) -> tuple[int, int]:
    """``(rank, world_size)``; initialises the process group when launched by torchrun. On CUDA
    the process's GPU becomes the current device first, so that no rank opens a context on GPU 0."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
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


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
