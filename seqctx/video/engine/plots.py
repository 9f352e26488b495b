"""PNG plots of a run's ``metrics.jsonl``: training loss and validation accuracy."""

from __future__ import annotations

import json
from pathlib import Path


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
