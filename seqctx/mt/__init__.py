"""The fairseq side: the CGC-LightConv model, IWSLT'14/Multi30K preparation, BLEU and recipes.

Importing ``seqctx.mt.models`` (or passing ``--user-dir $(seqctx mt user-dir)`` to fairseq)
registers ``lightconv_cgc``.
"""

from pathlib import Path


def user_dir() -> Path:
    """The plugin folder for fairseq's ``--user-dir``."""
    return Path(__file__).parent / "seqctx_fairseq_plugin"
