"""``seqctx analyze``: the papers' analyses of a trained model (:data:`ANALYSES`), each written as
``OUT/NAME.png`` and ``OUT/NAME.json`` with one summary line; analyses that do not apply to the
model are skipped with the reason. One shared pass over the data feeds every analysis's hooks
(channel dropping adds one pass per fraction); under torchrun each process takes a share of the
videos and rank 0 writes (the caller ends the process group)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from seqctx.errors import ConfigError
from seqctx.outputs import output_folder
from seqctx.video.engine.distributed import init_distributed, is_main, local_device
from seqctx.video.engine.evaluate import load_trained_model

from . import cgc_gates, channel_sparsity, class_selectivity, gct_weights
from .passes import Batch, analysis_loader, data_pass, summed, write_json

log = logging.getLogger(__name__)

ANALYSES: dict[str, ModuleType] = {m.NAME: m for m in (gct_weights, class_selectivity, channel_sparsity, cgc_gates)}


@dataclass
class Outcome:
    """What an analysis gave: its summary line, or why it was skipped; the files it wrote."""

    name: str
    line: str
    files: tuple[Path, ...] = ()
    skipped: bool = False


def labels_of(loader: DataLoader) -> np.ndarray:
    """The class indices of the videos a loader reads (all processes' shares together)."""
    dataset = loader.dataset
    if isinstance(dataset, Subset):
        return dataset.dataset.index.labels[np.asarray(dataset.indices)]
    return dataset.index.labels


def measure(model: nn.Module, loader: DataLoader, analyses: Sequence[ModuleType],
            device: torch.device) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Each analysis's numbers for one model over ``loader``'s videos (all processes take part;
    each gets the totals)."""
    batch = Batch()
    states: dict[str, dict[str, Any]] = {a.NAME: {} for a in analyses}
    hooks = [h for a in analyses for h in a.hooks(model, batch, states[a.NAME])]
    data_pass(model, loader, device, hooks, batch)
    totals = {name: summed(state) for name, state in states.items()}

    def rerun(extra_hooks: list[tuple[nn.Module, Any]]) -> float:
        """Top-1 (%) over the same videos with ``extra_hooks`` attached."""
        hits = torch.zeros(2, dtype=torch.float64)

        def count(logits: Tensor, labels: Tensor) -> None:
            hits.add_(torch.tensor([float((logits.argmax(1) == labels).sum()), float(len(labels))]))

        data_pass(model, loader, device, extra_hooks, Batch(), on_logits=count)
        correct, total = summed({"hits": hits})["hits"].tolist()
        return 100 * correct / max(total, 1)

    return {a.NAME: a.numbers(model, totals[a.NAME], rerun) for a in analyses}


def analyze(
    cfg_path: str | Path | None, checkpoint: str | Path, out: str | Path, max_videos: int | None = None,
    compare: str | Path | None = None, only: Sequence[str] | None = None, overrides: Sequence[str] = (),
) -> list[Outcome]:  # fmt: skip
    """Run the analyses (``only``: some of :data:`ANALYSES`) on ``checkpoint`` over
    ``max_videos`` videos of ``data.val_annotation`` drawn across its classes; ``compare``: a
    second checkpoint shown beside it where an analysis compares models (class selectivity,
    channel dropping and sparsity). Analyses that need classes (``NEEDS_CLASSES``) are skipped,
    with the reason, when the videos read hold fewer than two."""
    unknown = sorted(set(only or ()) - set(ANALYSES))
    if unknown:
        raise ConfigError(f"unknown analysis {unknown[0]!r} (--only); valid: {', '.join(ANALYSES)}")
    if max_videos is not None and max_videos < 1:
        raise ConfigError(f"--max-videos must be >= 1 (or left out: every video), got {max_videos}")
    out = output_folder(out, "--out")
    models = {Path(checkpoint).parent.name or "model": load_trained_model(cfg_path, checkpoint, overrides)}
    if compare is not None:
        models[Path(compare).parent.name + " (compare)"] = load_trained_model(cfg_path, compare, overrides)
    cfg, first, _ = next(iter(models.values()))
    device = local_device(cfg.train.device)
    init_distributed(device)
    loaders = {label: analysis_loader(m_cfg, max_videos, names or None) for label, (m_cfg, _, names) in models.items()}
    labels = labels_of(next(iter(loaders.values())))
    seen = len(np.unique(labels[labels >= 0]))
    outcomes, chosen = [], []
    for name, analysis in ANALYSES.items():
        if only and name not in only:
            continue
        reason = analysis.applies(first)
        if reason is None and analysis.NEEDS_CLASSES and seen < 2:
            reason = f"it compares classes, and the {len(labels)} videos read hold {seen} labelled class(es)"
        if reason is not None:
            outcomes.append(Outcome(name, f"{name}: skipped ({reason})", skipped=True))
        else:
            chosen.append(analysis)
    results: dict[str, dict[str, dict[str, Any]]] = {a.NAME: {} for a in chosen}
    for label, (_, model, _) in models.items():
        applicable = [a for a in chosen if a.applies(model) is None]
        for name, numbers in measure(model.to(device), loaders[label], applicable, device).items():
            results[name][label] = numbers
    for analysis in chosen:
        line = f"{analysis.NAME}: {analysis.summary(results[analysis.NAME])}"
        files = (out / f"{analysis.NAME}.png", out / f"{analysis.NAME}.json")
        if is_main():
            write_json(files[1], {"analysis": analysis.NAME, "checkpoint": str(checkpoint),
                                  "max_videos": max_videos, "models": results[analysis.NAME]})  # fmt: skip
            analysis.plot(results[analysis.NAME], files[0])
        outcomes.append(Outcome(analysis.NAME, line, files))
    return outcomes
