"""The folder ``fairseq-* --user-dir`` points at (``seqctx mt user-dir`` prints it).

fairseq imports this folder by its base name as a top-level module; the absolute import below
makes the registration live in ``seqctx.mt.models`` alone, so it happens once even when
``seqctx.mt`` is imported too.
"""

import seqctx.mt.models  # noqa: F401
