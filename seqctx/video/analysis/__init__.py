"""``seqctx analyze``: the papers' analyses of a trained model, as figures and numbers (GCT's gating
weights, GE's class selectivity, CE's channel sparsity and dropping, CGC's gates). Imports the
operators, models, data and engine; only the CLI imports it."""

from .class_selectivity import selectivity_index
from .run import ANALYSES, Outcome, analyze

__all__ = ["ANALYSES", "Outcome", "analyze", "selectivity_index"]
