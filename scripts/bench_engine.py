"""The training loop and evaluation at small scale: epoch start-up, iterations/s with 1 and 2
processes (torchrun, gloo on CPU), and ``seqctx test`` with 1 and 2 processes, on a synthetic data
set (TSM-R18 of width 16 on 8 frames of 64x64).

Epoch start-up is the gap between an epoch's last iteration and the next one's first, less a median
iteration (with a persistent loader, the workers need not be spawned again).

Usage: ``python scripts/bench_engine.py [--videos 48] [--workers 2] [--out bench_results/engine.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from benchlib import device_info, print_table, write_json

from seqctx.video.data import SynthConfig, generate_synthetic
from seqctx.video.engine import Trainer, load_config
from seqctx.video.engine.demo import DEMO_CONFIG


def overrides(root: Path, work_dir: Path, workers: int, epochs: int, val: bool) -> list[str]:
    return [
        "model.name=tsm_r18", "model.num_classes=4", "model.num_segments=8", "model.width=16",
        f"data.root={root / 'videos'}", f"data.train_annotation={root / 'train.json'}",
        f"data.val_annotation={root / 'validation.json' if val else ''}", f"data.labels={root / 'labels.json'}",
        "data.size=64", "data.scale_size=72", "data.batch_size=4", f"data.workers={workers}", "data.flip=false",
        f"train.epochs={epochs}", "train.log_every=10", "train.threads=1", f"work_dir={work_dir}",
    ]  # fmt: skip


def one_process(root: Path, out: Path, workers: int) -> dict[str, float]:
    """Epoch start-up and iterations/s of a 3-epoch run in this process."""
    stamps: list[tuple[int, float]] = []
    cfg = load_config(DEMO_CONFIG, overrides(root, out / "one", workers, 3, val=False))
    trainer = Trainer(cfg, progress=False, on_iteration=lambda e, i: stamps.append((e, time.perf_counter())))
    trainer.fit()
    steps = [b - a for (ea, a), (eb, b) in zip(stamps, stamps[1:], strict=False) if ea == eb]
    gaps = [b - a for (ea, a), (eb, b) in zip(stamps, stamps[1:], strict=False) if ea != eb]
    it = statistics.median(steps)
    return {"iters_per_s": 1 / it, "epoch_startup_s": statistics.median(gaps) - it}


def torchrun(args: list[str], procs: int, port: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={procs}", f"--master_port={port}",
           "-m", "seqctx", *args]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    return time.perf_counter() - t0


def train_rate(run: Path) -> float:
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(r["clips_per_s"] for r in recs if r["type"] == "train")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, default=48, help="synthetic videos per class pair (x4 classes / 2)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default="bench_results/engine.json")
    args = p.parse_args()
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root, out = Path(tmp) / "data", Path(tmp) / "runs"
        generate_synthetic(root, SynthConfig(classes=4, videos_per_class=args.videos // 4, num_frames=16, size=64))
        single = one_process(root, out, args.workers)
        rows.append({"measure": "epoch start-up (s)", "value": single["epoch_startup_s"]})
        rows.append({"measure": "iterations/s, 1 process", "value": single["iters_per_s"]})
        for procs, port in ((1, 29610), (2, 29611)):
            run = out / f"torchrun{procs}"
            sets = [x for o in overrides(root, run, args.workers, 2, val=False) for x in ("--set", o)]
            torchrun(["train", str(DEMO_CONFIG), *sets], procs, port)
            rows.append({"measure": f"clips/s, torchrun {procs} process(es)", "value": train_rate(run)})
        ckpt = out / "torchrun1" / "latest.pt"
        val = ["--set", f"data.val_annotation={root / 'train.json'}", "--set", f"data.workers={args.workers}"]
        for procs, port in ((1, 29612), (2, 29613)):
            secs = torchrun(
                ["test", "--checkpoint", str(ckpt), *val, "--out", str(out / f"test{procs}.csv")], procs, port
            )
            rows.append({"measure": f"seqctx test, {procs} process(es) (s)", "value": secs})
    print_table(rows, ["measure", "value"])
    write_json(args.out, {"info": device_info(torch.device("cpu")), "rows": rows})


if __name__ == "__main__":
    main()
