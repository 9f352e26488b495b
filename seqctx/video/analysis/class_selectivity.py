"""Class selectivity (GE paper, sec. 4 and Fig. 3, after Morcos et al., ICLR 2018): for each residual
block of the last stage, per channel, ``(mu_max - mu_rest) / (mu_max + mu_rest)``, where ``mu_max``
is the largest class-conditional mean activation of the channel (block output, averaged over space
and frames, per video) and ``mu_rest`` the mean of the other classes' means; 0 for a channel that
responds to every class alike, 1 for one that fires for a single class only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .passes import Batch, Hook, Rerun

NAME = "class_selectivity"
NEEDS_CLASSES = True  # class-conditional means: meaningless over videos of one class
BINS = torch.linspace(0, 1, 41)


def selectivity_index(class_means: Tensor) -> Tensor:
    """``(K, C)`` class-conditional mean activations (K >= 2 classes seen) -> ``(C,)`` indices in
    [0, 1] for non-negative activations; 0 where a channel is silent for every class."""
    top, arg = class_means.max(0)  # (C,)
    rest = (class_means.sum(0) - top) / (class_means.shape[0] - 1)
    den = top + rest
    return torch.where(den > 0, (top - rest) / den.clamp(min=1e-12), torch.zeros_like(den))


def last_stage_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The residual blocks of the trunk's last stage (``trunk.layer4.*``)."""
    stage = getattr(getattr(model, "trunk", None), "layer4", None)
    return [] if stage is None else [(f"trunk.layer4.{i}", block) for i, block in enumerate(stage)]


def applies(model: nn.Module) -> str | None:
    return None if last_stage_blocks(model) else "the model has no ResNet trunk (trunk.layer4)"


def hooks(model: nn.Module, batch: Batch, state: dict[str, Any]) -> list[tuple[nn.Module, Hook]]:
    """Per block: per-class sums of the per-video channel means, and per-class video counts."""
    classes = model.head.fc.out_features
    out = []
    for i, (_, block) in enumerate(last_stage_blocks(model)):
        channels = block.bn3.num_features if hasattr(block, "bn3") else block.bn2.num_features
        state[f"{i}.sum"] = torch.zeros(classes, channels, dtype=torch.float64)
        state[f"{i}.count"] = torch.zeros(classes, dtype=torch.float64)

        def hook(_m: nn.Module, _a: tuple[Tensor, ...], y: Tensor, key: str = f"{i}") -> None:
            v, labels = batch.per_video(y).double().cpu(), batch.labels.cpu()  # (N, C), (N,)
            state[f"{key}.sum"].index_add_(0, labels, v)
            state[f"{key}.count"] += torch.bincount(labels, minlength=classes).double()

        out.append((block, hook))
    return out


def numbers(model: nn.Module, state: dict[str, Any], rerun: Rerun) -> dict[str, Any]:
    blocks = []
    for i, (name, _) in enumerate(last_stage_blocks(model)):
        sums, counts = state[f"{i}.sum"], state[f"{i}.count"]
        seen = counts > 0
        si = selectivity_index(sums[seen] / counts[seen, None])
        density = torch.histogram(si.clamp(0, 1), BINS.double()).hist / si.numel()
        blocks.append({"block": name, "classes": int(seen.sum()), "mean": si.mean().item(),
                       "median": si.median().item(), "density": density.tolist(), "index": si.tolist()})  # fmt: skip
    return {"blocks": blocks, "bins": BINS.tolist()}


def plot(results: dict[str, dict[str, Any]], path: Path) -> None:
    """One panel per block, the distribution of the index, one curve per model."""
    from matplotlib.figure import Figure

    first = next(iter(results.values()))["blocks"]
    fig = Figure(figsize=(4.5 * len(first), 3.6))
    axes = fig.subplots(1, len(first), squeeze=False)
    centres = (BINS[1:] + BINS[:-1]) / 2
    for j, ax in enumerate(axes[0]):
        for label, r in results.items():
            b = r["blocks"][j]
            ax.plot(centres, b["density"], label=f"{label} (mean {b['mean']:.3f})")
        ax.set(xlabel="class selectivity index", ylabel="fraction of channels", title=first[j]["block"])
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def summary(results: dict[str, dict[str, Any]]) -> str:
    return "; ".join(
        f"{label}: mean index " + ", ".join(f"{b['mean']:.3f}" for b in r["blocks"]) + " (last-stage blocks in order)"
        for label, r in results.items()
    )
