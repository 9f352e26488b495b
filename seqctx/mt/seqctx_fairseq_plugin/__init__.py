"""The folder ``fairseq-* --user-dir`` points at (``seqctx mt user-dir`` prints it).

fairseq imports this folder by its base name as a top-level module; the absolute import below
makes the registration live in ``seqctx.mt.models`` alone, so it happens once even when
``seqctx.mt`` is imported too. The process is a fairseq command, whose ``torch.load`` calls
(``weights_only=True``, torch's default) need fairseq's checkpoint types allowed: done here, for
this process only, and not on a plain ``import seqctx.mt.models``.
"""

import seqctx.mt.models  # noqa: F401
from seqctx.mt.safe_load import allow_fairseq_checkpoints

allow_fairseq_checkpoints()
