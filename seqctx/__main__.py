"""``python -m seqctx``: the same as the ``seqctx`` command (and what ``torchrun -m seqctx`` runs)."""

from seqctx.cli import main

raise SystemExit(main())
