"""Let ``torch.load(weights_only=True)`` (torch >= 2.6's default) read fairseq checkpoints.

fairseq 0.12 calls ``torch.load`` without ``weights_only``; its checkpoints hold an
``argparse.Namespace`` (older ones), the config as plain containers, and meter states with NumPy
scalars. Rather than turning ``weights_only`` off for everything (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``),
this allow-lists exactly those types.
"""

from __future__ import annotations

import argparse
import collections

import numpy as np
import torch


def fairseq_checkpoint_types() -> list[object]:
    """``argparse.Namespace`` (the ``args`` every fairseq 0.12 checkpoint holds) and NumPy scalars
    (meter values in ``extra_state``): data types only, nothing that runs code on load."""
    core = np._core if hasattr(np, "_core") else np.core
    types: list[object] = [argparse.Namespace, collections.OrderedDict, np.dtype, core.multiarray.scalar]
    return types + [type(np.dtype(t)) for t in ("float64", "float32", "float16", "int64", "int32", "bool")]


def allow_fairseq_checkpoints() -> None:
    """Register the types above with ``torch.serialization.add_safe_globals`` (idempotent)."""
    torch.serialization.add_safe_globals(fairseq_checkpoint_types())
