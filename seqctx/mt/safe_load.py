"""Let ``torch.load(weights_only=True)`` (torch >= 2.6's default) read fairseq checkpoints.

fairseq 0.12 calls ``torch.load`` without ``weights_only``; its checkpoints hold an
``argparse.Namespace`` (older ones), the config as plain containers, and meter states with NumPy
scalars. Rather than turning ``weights_only`` off for everything (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``),
this allow-lists exactly those types, in two scopes:

- :func:`fairseq_checkpoints`, a context manager, for seqctx's own loads (the recipes' update
  counts and checkpoint averaging); the allow-list is restored on exit;
- :func:`allow_fairseq_checkpoints`, for the whole process, called only by the ``--user-dir``
  plugin folder: that process is a fairseq command, whose own ``torch.load`` calls need it.

Importing :mod:`seqctx.mt.models` changes nothing in torch.
"""

from __future__ import annotations

import argparse
import collections
from contextlib import AbstractContextManager

import numpy as np
import torch


def fairseq_checkpoint_types() -> list[object]:
    """``argparse.Namespace`` (the ``args`` every fairseq 0.12 checkpoint holds) and NumPy scalars
    (meter values in ``extra_state``): data types only, nothing that runs code on load."""
    core = np._core if hasattr(np, "_core") else np.core
    types: list[object] = [argparse.Namespace, collections.OrderedDict, np.dtype, core.multiarray.scalar]
    return types + [type(np.dtype(t)) for t in ("float64", "float32", "float16", "int64", "int32", "bool")]


def fairseq_checkpoints() -> AbstractContextManager:
    """``with fairseq_checkpoints(): torch.load(path, weights_only=True)``: the types above are
    allowed inside the block only (``torch.serialization.safe_globals``)."""
    return torch.serialization.safe_globals(fairseq_checkpoint_types())


def allow_fairseq_checkpoints() -> None:
    """Allow the types above for the rest of the process (``add_safe_globals``; idempotent): for
    fairseq's own processes, through the plugin folder."""
    torch.serialization.add_safe_globals(fairseq_checkpoint_types())
