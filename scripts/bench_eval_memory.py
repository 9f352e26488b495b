"""Evaluation memory against the number of views: peak resident memory of ``evaluate_dataset`` with
1 view a video and with 10 clips x 3 crops (30 views) at the same clip cap
(``data.test_batch_clips``), beside 30 views uncapped (every view of ``data.batch_size`` videos in one
forward: how evaluation ran before the cap).

Each setting runs in a fresh process (peak RSS is a process's lifetime maximum): an I3D-R50 at
width 16 on synthetic 96x96 videos, dense 16x2 clips, 4 videos a batch, CPU. Growth = peak RSS
minus the RSS once model and data set are built.

Usage: ``python scripts/bench_eval_memory.py [--videos 8] [--cap 4] [--out bench_results/eval_memory.json]``
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from benchlib import print_table, write_json

SETTINGS = {  # name: (clips, crops, clip cap or None for batch_size x views)
    "1 view, capped": (1, 1, True),
    "30 views, capped": (10, 3, True),
    "30 views, uncapped (before)": (10, 3, False),
}


def rss_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20


def one(setting: str, root: Path, cap: int) -> dict[str, float]:
    import torch

    from seqctx.video.engine import load_config
    from seqctx.video.engine.builders import make_dataset, make_model
    from seqctx.video.engine.evaluate import evaluate_dataset

    clips, crops, capped = SETTINGS[setting]
    torch.set_num_threads(2)
    cfg = load_config(None, [
        "model.name=i3d_r50", "model.num_classes=10", "model.num_segments=16", "model.width=16",
        f"data.root={root / 'videos'}", f"data.val_annotation={root / 'validation.json'}",
        f"data.labels={root / 'labels.json'}", "data.format=ssv2", "data.sampler=dense", "data.frame_interval=2",
        "data.size=96", "data.scale_size=96", "data.batch_size=4", "data.workers=0",
        f"data.test_batch_clips={cap if capped else 4 * clips * crops}",
    ])  # fmt: skip
    model = make_model(cfg).eval()
    dataset = make_dataset(cfg, "test", clips=clips, crops=crops)
    base = rss_mib()
    result = evaluate_dataset(model, cfg, dataset, torch.device("cpu"), clips * crops, progress=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"videos": result.num_videos, "views": clips * crops, "peak_MiB": peak, "growth_MiB": peak - base}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--cap", type=int, default=4, help="data.test_batch_clips of the capped settings")
    parser.add_argument("--out", default="bench_results/eval_memory.json")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, Path(args.root), args.cap)))
        return
    from seqctx.video.data import SynthConfig, generate_synthetic

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        per_class = max(2, args.videos // 2)  # half of each class's videos go to validation
        generate_synthetic(tmp, SynthConfig(classes=2, videos_per_class=per_class, num_frames=48, size=96,
                                            val_fraction=0.5))  # fmt: skip
        for setting in SETTINGS:
            out = subprocess.run([sys.executable, __file__, "--one", setting, "--root", tmp, "--cap", str(args.cap)],
                                 check=True, capture_output=True, text=True).stdout  # fmt: skip
            rows.append({"setting": setting, **json.loads(out.strip().splitlines()[-1])})
    for row in rows:
        row["peak_vs_1_view"] = row["peak_MiB"] / rows[0]["peak_MiB"]
        row["growth_vs_1_view"] = row["growth_MiB"] / rows[0]["growth_MiB"]
    print_table(rows, ["setting", "videos", "views", "peak_MiB", "peak_vs_1_view", "growth_MiB", "growth_vs_1_view"])
    write_json(args.out, {"cap": args.cap, "rows": rows})


if __name__ == "__main__":
    main()
