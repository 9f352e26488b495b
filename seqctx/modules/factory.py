"""Create context operators by name: the table every backbone and the surgery helpers use."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from torch import nn

from .cgc import ContextGate
from .channel_equilibrium import ChannelEquilibrium
from .gather_excite import GatherExcite
from .gct import GCT
from .squeeze_excite import SqueezeExcite

__all__ = ["CONTEXT_OPERATORS", "OPERATOR_TYPES", "ContextSpec", "create_context", "list_contexts"]


@dataclass(frozen=True)
class ContextSpec:
    """One row of the name table: how to build an operator (``build(channels, spatial_dims, **kw)``,
    the contract of :mod:`.contract`) and what it is."""

    build: Callable[..., nn.Module]
    summary: str


CONTEXT_OPERATORS: dict[str, ContextSpec] = {
    "gct": ContextSpec(GCT, "Gated Channel Transformation (Yang et al., CVPR 2020)"),
    "se": ContextSpec(SqueezeExcite, "Squeeze-and-Excitation (Hu et al., CVPR 2018)"),
    "ge": ContextSpec(GatherExcite, "Gather-Excite theta-minus, parameter-free gather (Hu et al., 2018)"),
    "ge_theta": ContextSpec(partial(GatherExcite, param_gather=True), "Gather-Excite theta, depthwise-conv gather"),
    "ge_theta_plus": ContextSpec(
        partial(GatherExcite, param_gather=True, mlp=True), "Gather-Excite theta-plus, gather + MLP"
    ),
    "ce": ContextSpec(ChannelEquilibrium, "Channel Equilibrium (Shao et al., ICML 2020)"),
}

# The module types of every operator (CGC's by its gate): what a trainer tells apart from the backbone
# (partial BN freezes the backbone's normalisers only, not the ones inside these).
OPERATOR_TYPES: tuple[type[nn.Module], ...] = (GCT, SqueezeExcite, GatherExcite, ChannelEquilibrium, ContextGate)


def list_contexts() -> list[str]:
    """The names :func:`create_context` accepts."""
    return sorted(CONTEXT_OPERATORS)


def create_context(name: str, channels: int, spatial_dims: int = 2, **kwargs: object) -> nn.Module:
    """Build the context operator ``name`` for ``channels`` channels of ``(N, C, *S)`` inputs.

    ``spatial_dims = len(S)``; ``kwargs`` go to the operator's constructor (e.g.
    ``reduction=8`` for ``se``, ``feat_size=14`` for ``ge_theta``). CGC is not here: it replaces
    a convolution rather than sitting beside one (see :mod:`seqctx.modules.cgc`).
    """
    spec = CONTEXT_OPERATORS.get(name)
    if spec is None:
        raise ValueError(f"unknown context operator {name!r}; valid names: {', '.join(list_contexts())}")
    return spec.build(channels, spatial_dims, **kwargs)
