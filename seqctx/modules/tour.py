"""``seqctx operators``: a quick tour of the context operators on one feature map."""

from __future__ import annotations

import time

import torch
from torch import nn

from .cgc import ContextGatedConv2d
from .factory import CONTEXT_OPERATORS, create_context


def operator_rows(channels: int = 64, size: int = 28, batch: int = 8) -> list[dict[str, object]]:
    """For every operator: parameters, output change vs. its input at init, and fwd+bwd time.
    Seeded for repeatable numbers, without touching the caller's global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        x = torch.randn(batch, channels, size, size)
        ops: dict[str, nn.Module] = {
            name: create_context(name, channels, 2, **({"feat_size": size} if name.startswith("ge_") else {}))
            for name in CONTEXT_OPERATORS
        }
        ops["cgc (3x3 conv)"] = ContextGatedConv2d(channels, channels, 3, padding=1)
        ops["conv 3x3 (reference)"] = nn.Conv2d(channels, channels, 3, padding=1)
    rows = []
    for name, op in ops.items():
        xi = x.clone().requires_grad_(True)
        t0 = time.perf_counter()
        y = op(xi)
        y.sum().backward()
        ms = (time.perf_counter() - t0) * 1e3
        spec = CONTEXT_OPERATORS.get(name)
        rows.append(
            {
                "operator": name,
                "params": sum(p.numel() for p in op.parameters()),
                "out_shape": tuple(y.shape),
                "identity_at_init": y.shape == x.shape and bool(torch.equal(y.detach(), x)),
                "fwd+bwd_ms": round(ms, 1),
                "what": spec.summary if spec else "",
            }
        )
    return rows


def operator_table(channels: int = 64, size: int = 28, batch: int = 8) -> str:
    """:func:`operator_rows` as a text table (what ``seqctx operators`` prints)."""
    rows = operator_rows(channels, size, batch)
    cols = ["operator", "params", "identity_at_init", "fwd+bwd_ms", "what"]
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    lines = [f"Context operators on a ({batch}, {channels}, {size}, {size}) feature map:"]
    lines.append("  ".join(c.ljust(widths[c]) for c in cols))
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(lines)
