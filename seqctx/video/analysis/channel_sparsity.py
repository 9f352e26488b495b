"""Channel sparsity and channel dropping (CE paper, Fig. 1 and Fig. 3a-b): the fraction of
activations below 1e-3 after each of the backbone's normalisers (+ReLU), per layer; and top-1 when
a growing fraction of the channels of each residual block's first normaliser is zeroed at random
(0, 10, ..., 50%: a network that relies on few channels drops faster)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from seqctx.video.engine.train import backbone_norms

from .passes import Batch, Hook, Rerun

NAME = "channel_sparsity"
NEEDS_CLASSES = True  # top-1 under channel dropping: meaningless over videos of one class
THRESHOLD = 1e-3
DROP_FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)


def applies(model: nn.Module) -> str | None:
    return None if backbone_norms(model) else "the model has no BatchNorm in its backbone"


def first_norms(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Each residual block's first normaliser (``bn1`` of ``trunk.layerS.B``)."""
    return [(n, m) for n, m in model.named_modules() if n.startswith("trunk.layer") and n.endswith(".bn1")]


def hooks(model: nn.Module, batch: Batch, state: dict[str, Any]) -> list[tuple[nn.Module, Hook]]:
    """Per backbone normaliser: (activations below the threshold after ReLU, all activations)."""
    out = []
    for i, norm in enumerate(backbone_norms(model)):
        state[f"{i}"] = torch.zeros(2, dtype=torch.float64)

        def hook(_m: nn.Module, _a: tuple[Tensor, ...], y: Tensor, key: str = f"{i}") -> None:
            state[key] += torch.tensor([float((y < THRESHOLD).sum()), float(y.numel())], dtype=torch.float64)

        out.append((norm, hook))
    return out


def dropping_hooks(model: nn.Module, fraction: float, seed: int = 0) -> list[tuple[nn.Module, Hook]]:
    """Zero ``fraction`` of the channels of each block's first normaliser (a fixed random choice)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _, norm in first_norms(model):
        c = norm.num_features
        keep = torch.ones(c)
        keep[torch.randperm(c, generator=g)[: round(fraction * c)]] = 0

        def hook(_m: nn.Module, _a: tuple[Tensor, ...], y: Tensor, keep: Tensor = keep) -> Tensor:
            return y * keep.to(y.device, y.dtype).view(1, -1, *[1] * (y.dim() - 2))

        out.append((norm, hook))
    return out


def numbers(model: nn.Module, state: dict[str, Any], rerun: Rerun) -> dict[str, Any]:
    norms = {id(m) for m in backbone_norms(model)}
    names = [n for n, m in model.named_modules() if id(m) in norms]
    layers = [{"layer": n, "sparsity": (state[f"{i}"][0] / state[f"{i}"][1]).item()} for i, n in enumerate(names)]
    curve = [{"dropped": f, "top1": rerun(dropping_hooks(model, f))} for f in DROP_FRACTIONS]
    return {"threshold": THRESHOLD, "layers": layers, "dropping": curve}


def plot(results: dict[str, dict[str, Any]], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4))
    a, b = fig.subplots(1, 2)
    for label, r in results.items():
        a.plot([x["sparsity"] for x in r["layers"]], marker="o", ms=3, label=label)
        b.plot([100 * x["dropped"] for x in r["dropping"]], [x["top1"] for x in r["dropping"]], marker="o", label=label)
    a.set(xlabel="normaliser (network order)", ylabel=f"fraction of activations < {THRESHOLD:g}",
          title="channel sparsity after BN + ReLU")  # fmt: skip
    b.set(xlabel="channels of the first normalisers zeroed (%)", ylabel="top-1 (%)", title="channel dropping")
    for ax in (a, b):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def summary(results: dict[str, dict[str, Any]]) -> str:
    parts = []
    for label, r in results.items():
        mean = sum(x["sparsity"] for x in r["layers"]) / len(r["layers"])
        drop = r["dropping"]
        parts.append(f"{label}: mean sparsity {mean:.3f}; top-1 {drop[0]['top1']:.1f} -> {drop[-1]['top1']:.1f} with "
                     f"{100 * drop[-1]['dropped']:.0f}% of the first normalisers' channels zeroed")  # fmt: skip
    return "; ".join(parts)
