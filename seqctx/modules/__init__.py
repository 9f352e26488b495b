"""The context operators; this package imports torch only."""

from .cgc import ContextGate, ContextGatedConv1d, ContextGatedConv2d, ContextGatedConv3d
from .channel_equilibrium import ChannelEquilibrium, inverse_sqrt_newton
from .factory import CONTEXT_OPERATORS, OPERATOR_TYPES, create_context, list_contexts
from .gather_excite import GatherExcite
from .gct import GCT
from .squeeze_excite import SqueezeExcite
from .surgery import SurgeryReport, convert_to_cgc, insert_context
from .temporal_shift import TemporalShift, temporal_shift

__all__ = [
    "CONTEXT_OPERATORS",
    "OPERATOR_TYPES",
    "GCT",
    "ChannelEquilibrium",
    "ContextGate",
    "ContextGatedConv1d",
    "ContextGatedConv2d",
    "ContextGatedConv3d",
    "GatherExcite",
    "SqueezeExcite",
    "SurgeryReport",
    "TemporalShift",
    "convert_to_cgc",
    "create_context",
    "insert_context",
    "inverse_sqrt_newton",
    "list_contexts",
    "temporal_shift",
]
