"""The annotation index at Kinetics-400 size: build time, memory of the records, a forked
DataLoader worker's private-memory growth after reading every record, and ``stat`` calls per
found video for each Kinetics layout.

The CSV is synthetic, shaped like Kinetics-400's training split (240k rows, 400 classes, 11-char
YouTube ids, 10 s segments). Memory: ``tracemalloc`` (Python objects and NumPy buffers) retained
after the dataset is built. Worker growth: a process forked after the build (as DataLoader
workers are) reads each record's id, label and first candidate path; its private memory
(``Private_Clean + Private_Dirty`` in ``/proc/self/smaps_rollup``) before and after.

Usage: ``python scripts/bench_index.py [--rows 240000] [--label after] [--out bench_results/index.json]``
Targets (issue 19): build <= 10 s, records <= 100 MiB, worker growth <= 50 MiB.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import string
import tempfile
import time
import tracemalloc
from pathlib import Path
from unittest import mock

from benchlib import print_table, write_json

from seqctx.video.data import build_dataset

MIB = 2**20


def write_csv(path: Path, rows: int, classes: int = 400, seed: int = 0) -> list[tuple[str, str, str]]:
    """A Kinetics-format CSV; returns ``(label, id, split)`` of each row."""
    rng = random.Random(seed)
    names = [f"class {i:03d} {''.join(rng.choices(string.ascii_lowercase, k=8))}" for i in range(classes)]
    alphabet = string.ascii_letters + string.digits + "-_"
    out, lines = [], ["label,youtube_id,time_start,time_end,split,is_cc"]
    for _ in range(rows):
        label, yid, start = rng.choice(names), "".join(rng.choices(alphabet, k=11)), rng.randrange(0, 600)
        lines.append(f'"{label}",{yid},{start},{start + 10},train,0')
        out.append((label, f"{yid}_{start:06d}_{start + 10:06d}", "train"))
    path.write_text("\n".join(lines) + "\n")
    return out


def private_mib() -> float:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:])
    return sum(int(fields[k].split()[0]) for k in ("Private_Clean", "Private_Dirty")) / 1024


def first_path(dataset, i: int) -> str:
    """The first path video ``i`` may have (the index API, or the per-record candidates before it)."""
    if hasattr(dataset, "candidates"):
        return next(iter(dataset.candidates(i)))
    return str(dataset.records[i].candidates[0])


def records(dataset):
    """The index (before it: the list of per-video records)."""
    return dataset.index if hasattr(dataset, "index") else dataset.records


def worker_growth(dataset) -> float:
    """MiB a forked process's private memory grows by reading every record."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker
        os.close(read)
        gc.disable()  # as a busy worker between collections: measure the reads, not the collector
        before = private_mib()
        table = records(dataset)
        for i in range(len(dataset)):
            record = table[i]
            _ = (record.id, record.label, first_path(dataset, i))
        os.write(write, f"{private_mib() - before:.1f}".encode())
        os._exit(0)
    os.close(write)
    growth = float(os.read(read, 64).decode())
    os.waitpid(pid, 0)
    return growth


def stats_per_video(tmp: Path, layout: str, rows: list[tuple[str, str, str]]) -> str:
    """``stat`` calls to find each of ``rows``'s videos laid out as ``layout``, after the
    engine's check (which finds the layout): mean per video, or "not found"."""
    root = tmp / layout.replace("/", "_").replace("{", "").replace("}", "")
    for label, vid, split in rows:
        path = root / (layout.format(label=label, id=vid, split=split, youtube_id=vid[:11]) + ".mp4")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    csv = tmp / "layout.csv"
    csv.write_text("label,youtube_id,time_start,time_end,split\n" + "".join(
        f'"{label}",{vid[:11]},{int(vid[12:18])},{int(vid[19:])},{split}\n' for label, vid, split in rows))  # fmt: skip
    dataset = build_dataset(csv, root)
    try:
        dataset.check_found()
    except ValueError:
        return "not found"
    calls = 0
    real_stat = os.stat

    def counting_stat(*args, **kwargs):
        nonlocal calls
        calls += 1
        return real_stat(*args, **kwargs)

    with mock.patch("os.stat", counting_stat):
        for i in range(len(dataset)):
            dataset.path(i) if hasattr(dataset, "path") else dataset.resolve(records(dataset)[i])
    return f"{calls / len(dataset):.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=240_000)
    parser.add_argument("--label", default="seqctx")
    parser.add_argument("--out", default="bench_results/index.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = write_csv(tmp / "train.csv", args.rows)
        t0 = time.perf_counter()
        dataset = build_dataset(tmp / "train.csv", tmp / "videos")
        build = time.perf_counter() - t0
        del dataset
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        dataset = build_dataset(tmp / "train.csv", tmp / "videos")
        gc.collect()
        records = (tracemalloc.get_traced_memory()[0] - base) / MIB
        tracemalloc.stop()
        growth = worker_growth(dataset)
        layouts = ["{split}/{label}/{id}", "{split}/{id}", "{id}", "{youtube_id}"]
        stats = {layout: stats_per_video(tmp, layout, rows[:2000]) for layout in layouts}
    row = {"label": args.label, "rows": args.rows, "build_s": build, "records_MiB": records,
           "worker_growth_MiB": growth, **{f"stats {k}": v for k, v in stats.items()}}  # fmt: skip
    print_table([row], list(row))
    write_json(args.out, {"targets": {"build_s": 10, "records_MiB": 100, "worker_growth_MiB": 50}, "result": row})


if __name__ == "__main__":
    main()
