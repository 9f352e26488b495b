"""The demo behind ``make demo``: synthesise the motion data set, train TSN, TSM, TSM+CGC and an
online TSM on it and evaluate them; ``seqctx demo`` prints the table of their accuracies with the
plots' paths (and the online TSM's accuracy streamed frame by frame)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from .config import load_config
from .train import Trainer

# (label, model, context, shift): the online TSM sees frame t-1 only (seqctx.video.online)
DEMO_MODELS = [("TSN", "tsn_r18", None, "offline"), ("TSM", "tsm_r18", None, "offline"),
               ("TSM+CGC", "tsm_r18", "cgc", "offline"), ("TSM online", "tsm_r18", None, "online")]  # fmt: skip
DEMO_CONFIG = Path(__file__).with_name("demo_synthetic.yaml")  # shipped inside the package

log = logging.getLogger(__name__)


def run_demo(
    config: str | Path = DEMO_CONFIG, work_dir: str | Path = "work_dirs/demo", overrides: list[str] | None = None
) -> list[dict]:
    """Train the demo models into ``work_dir/{tsn,tsm,tsm_cgc,tsm_online}`` (a re-run replaces
    them); returns a row per model (its metrics, minutes, plots and run folder); progress is logged."""
    from seqctx.video.data import SynthConfig, generate_synthetic

    work_dir = Path(work_dir)
    data = work_dir / "data"
    runs = []
    for label, name, context, shift in DEMO_MODELS:  # every config is checked before any long work starts
        run = work_dir / label.lower().replace("+", "_").replace(" ", "_")
        sets = [
            f"model.name={name}", f"model.context={'null' if context is None else context}", f"model.shift={shift}",
            f"work_dir={run}",
            f"data.root={data / 'videos'}", f"data.train_annotation={data / 'train.json'}",
            f"data.val_annotation={data / 'validation.json'}", f"data.labels={data / 'labels.json'}",
        ]  # fmt: skip
        runs.append((label, name, context, run, load_config(config, sets + list(overrides or []))))
    if not (data / "validation.json").is_file():
        log.info("synthesising the motion data set into %s ...", data)
        generate_synthetic(data, SynthConfig(), progress=True, overwrite=True)  # the demo's own folder
    rows = []
    for label, name, context, run, cfg in runs:
        log.info("training %s (%s, context=%s) for %d epochs ...", label, name, context, cfg.train.epochs)
        t0 = time.perf_counter()
        with Trainer(cfg, overwrite=True) as trainer:
            metrics = trainer.fit()
        rows.append({"model": label, **metrics, "minutes": (time.perf_counter() - t0) / 60,
                     "plots": f"{run / 'loss.png'}, {run / 'accuracy.png'}", "run": str(run)})  # fmt: skip
    return rows
