"""PNG plots: a run's ``metrics.jsonl`` (training loss and validation accuracy), and a test's
confusion matrix."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch


def plot_metrics(metrics_file: str | Path, out_dir: str | Path) -> list[Path]:
    from matplotlib.figure import Figure  # the object-oriented API: no pyplot state, no backend switch

    records = [json.loads(line) for line in Path(metrics_file).read_text().splitlines() if line.strip()]
    out_dir = Path(out_dir)
    written = []
    train = [r for r in records if r["type"] == "train"]
    if train:
        per_epoch = max(r["iteration"] for r in train)
        fig = Figure(figsize=(6, 4))
        ax = fig.subplots()
        ax.plot([r["epoch"] + r["iteration"] / per_epoch for r in train], [r["loss"] for r in train], lw=1)
        ax.set(xlabel="epoch", ylabel="training loss", title="loss")
        ax.grid(alpha=0.3)
        written.append(out_dir / "loss.png")
        fig.savefig(written[-1], dpi=100, bbox_inches="tight")
    val = [r for r in records if r["type"] == "val"]
    if val:
        fig = Figure(figsize=(6, 4))
        ax = fig.subplots()
        for key, label in (("top1", "top-1"), ("top5", "top-5"), ("mean_class_accuracy", "mean class")):
            ax.plot([r["epoch"] for r in val], [r[key] for r in val], marker="o", label=label)
        ax.set(xlabel="epoch", ylabel="accuracy (%)", title="validation accuracy")
        ax.legend()
        ax.grid(alpha=0.3)
        written.append(out_dir / "accuracy.png")
        fig.savefig(written[-1], dpi=100, bbox_inches="tight")
    return written


def plot_confusion(matrix: torch.Tensor, classes: Sequence[str], path: str | Path) -> Path:
    """The confusion matrix (rows: true class, columns: predicted), each row normalised to the
    fraction of its videos; class names on the axes up to 60 classes."""
    from matplotlib.figure import Figure

    k = len(classes)
    rows = matrix.float() / matrix.sum(1, keepdim=True).clamp(min=1)
    side = min(4 + 0.25 * k, 40)
    fig = Figure(figsize=(side, side))
    ax = fig.subplots()
    image = ax.imshow(rows.numpy(), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the class's videos")
    if k <= 60:
        ax.set_xticks(range(k), classes, rotation=90, fontsize=7)
        ax.set_yticks(range(k), classes, fontsize=7)
    ax.set(xlabel="predicted class", ylabel="true class", title="confusion matrix")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return Path(path)
