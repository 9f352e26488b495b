"""GCT gating weights (GCT paper, sec. 4.4, Fig. 3): per GCT layer in network order, the distribution
of ``gamma`` (stacked histograms, log(1 + density) as the paper plots it), its mean and std, and the
ratio of output to input feature variance over the data. The paper's finding: mean ``gamma`` < 0
in shallow layers (channels cooperate), > 0 near the output (they compete)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from seqctx.modules import GCT

from .passes import Batch, Hook, Rerun, layer_names

NAME = "gct_gating"
NEEDS_CLASSES = False
BINS = torch.linspace(-3, 3, 61)


def applies(model: nn.Module) -> str | None:
    return None if layer_names(model, GCT) else "the model has no GCT layer"


def hooks(model: nn.Module, batch: Batch, state: dict[str, Any]) -> list[tuple[nn.Module, Hook]]:
    """Sums of ``x``, ``x^2`` and counts of each GCT's input and output (for their variances)."""
    out = []
    for i, (_, layer) in enumerate(layer_names(model, GCT)):
        state[f"{i}"] = torch.zeros(2, 3, dtype=torch.float64)  # (input, output) x (n, sum, sum of squares)

        def hook(_m: nn.Module, args: tuple[Tensor, ...], y: Tensor, key: str = f"{i}") -> None:
            for row, t in enumerate((args[0], y)):
                t = t.double()
                state[key][row] += torch.stack([torch.tensor(float(t.numel()), dtype=torch.float64), t.sum(),
                                                t.square().sum()]).cpu()  # fmt: skip

        out.append((layer, hook))
    return out


def numbers(model: nn.Module, state: dict[str, Any], rerun: Rerun) -> dict[str, Any]:
    layers = []
    for i, (name, layer) in enumerate(layer_names(model, GCT)):
        gamma = layer.gamma.detach().float().cpu()
        n, s, q = state[f"{i}"].unbind(1)
        var = q / n - (s / n) ** 2  # (input, output)
        density = torch.histogram(gamma.clamp(BINS[0], BINS[-1]), BINS).hist / gamma.numel()
        layers.append({"layer": name, "channels": gamma.numel(), "gamma_mean": gamma.mean().item(),
                       "gamma_std": gamma.std(unbiased=False).item(), "gamma_density": density.tolist(),
                       "variance_ratio": (var[1] / var[0]).item()})  # fmt: skip
    means = [r["gamma_mean"] for r in layers]
    half, quarter = len(means) // 2, max(1, len(means) // 4)
    shallow, deep = sum(means[:half]) / max(half, 1), sum(means[-quarter:]) / quarter
    return {"layers": layers, "bins": BINS.tolist(), "shallow_half_mean_gamma": shallow,
            "deepest_quarter_mean_gamma": deep, "paper_trend": bool(shallow < 0 < deep)}  # fmt: skip


def plot(results: dict[str, dict[str, Any]], path: Path) -> None:
    """Fig. 3 of the GCT paper for the first model: gamma's distribution per layer, its mean and
    std, the variance ratio."""
    from matplotlib.figure import Figure

    label, r = next(iter(results.items()))
    layers = r["layers"]
    dens = torch.tensor([x["gamma_density"] for x in layers])
    fig = Figure(figsize=(16, 4))
    a, b, c = fig.subplots(1, 3)
    a.imshow(torch.log1p(dens * 100).T.numpy(), aspect="auto", origin="lower", cmap="magma",
             extent=(-0.5, len(layers) - 0.5, r["bins"][0], r["bins"][-1]))  # fmt: skip
    a.set(xlabel="GCT layer (network order)", ylabel="gamma", title="distribution of gamma, log(1 + density)")
    idx = range(len(layers))
    b.bar(idx, [x["gamma_mean"] for x in layers], yerr=[x["gamma_std"] for x in layers], color="tab:blue", alpha=0.8)
    b.axhline(0, color="k", lw=0.8)
    b.set(xlabel="GCT layer", ylabel="gamma", title="mean and std of gamma per layer")
    c.plot(idx, [x["variance_ratio"] for x in layers], marker="o", ms=3)
    c.axhline(1, color="k", lw=0.8)
    c.set(xlabel="GCT layer", ylabel="var(out) / var(in)", title=f"feature variance ratio ({label})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def summary(results: dict[str, dict[str, Any]]) -> str:
    label, r = next(iter(results.items()))
    trend = "shows" if r["paper_trend"] else "does not show"
    return (f"{label}: {len(r['layers'])} GCT layers; mean gamma {r['shallow_half_mean_gamma']:+.3f} in the shallow "
            f"half, {r['deepest_quarter_mean_gamma']:+.3f} in the deepest quarter: the model {trend} the paper's "
            "trend (< 0 far from the output, > 0 near it)")  # fmt: skip
