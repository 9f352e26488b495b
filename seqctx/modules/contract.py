"""The contract every context operator keeps: built as ``Op(channels, spatial_dims=2, *, ...)``
for ``(N, channels, *S)`` inputs with ``len(S) == spatial_dims`` (1: sequences, 2: images or
frames, 3: clips), and an input that breaks it is an error naming the operator and both shapes."""

from __future__ import annotations

from torch import Tensor

__all__ = ["check_input", "check_spatial_dims"]


def check_spatial_dims(op: str, spatial_dims: int) -> None:
    if spatial_dims not in (1, 2, 3):
        raise ValueError(f"{op} spatial_dims must be 1, 2 or 3, got {spatial_dims}")


def check_input(op: str, x: Tensor, channels: int, spatial_dims: int) -> None:
    """Raise ``ValueError`` unless ``x`` is ``(N, channels, *S)`` with ``spatial_dims`` dims in ``S``."""
    if x.dim() != spatial_dims + 2 or x.shape[1] != channels:
        raise ValueError(
            f"{op}(channels={channels}, spatial_dims={spatial_dims}) expects (N, {channels}, *S) with "
            f"{spatial_dims} spatial dims, got {tuple(x.shape)}"
        )
