"""The ``seqctx`` command: parses arguments, then calls into the package. No logic of its own."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def _operators(args: argparse.Namespace) -> int:
    from seqctx.showcase import print_operator_table

    print_operator_table(args.channels, args.size, args.batch)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seqctx", description="Context modules for video and sequence models.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("operators", help="tour of the context operators: parameters, identity at init, time")
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--batch", type=int, default=8)
    p.set_defaults(func=_operators)

    p = sub.add_parser("demo", help="the demo that `make demo` runs")
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--batch", type=int, default=8)
    p.set_defaults(func=_operators)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
