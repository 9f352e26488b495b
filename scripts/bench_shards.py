"""Shards against files, side by side in one run: items/s of the training pipeline reading the same
prepared clips as files, from local shards and from an S3 server on the loopback interface; and the
start-up time and memory of one rank for a 240k-sample index (Kinetics-400's training set) against
the list file and the Kinetics CSV of the same size.

Clips: the real 340x256 Kinetics clip of ``tests/data`` (332 frames), ``--clips`` copies under
other names, prepared by ``seqctx data prepare --shards`` (short side 256, a keyframe every 16
frames, shards of ``--shard-size``). Items: TSN 8 segments with the training transforms, as
``seqctx train`` loads them (decoding in the time-limit helper), in this process (the per-item
cost), each item another clip. S3: moto's server (``python -m moto.server``), a process of its own
on 127.0.0.1: it measures the path through fsspec/s3fs and HTTP, not a real object store's latency.

Start-up: in a fresh process each, the time to read the annotation and build the data set, and
the resident memory (MiB) it adds, what each rank (and, copied on write, each loader worker) holds;
the index from local disk and from the loopback S3 server.

Usage: ``python scripts/bench_shards.py [--clips 24] [--items 24] [--out bench_results/shards.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_loader import REAL, make_source
from benchlib import print_table, write_json

SAMPLES = 240_000  # Kinetics-400's training set
CLASSES = 400


def s3_server() -> subprocess.Popen:
    """moto's S3 server on a free loopback port; its endpoint and credentials in this process's
    environment (what the readers, and child processes, use)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "bench",
           "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    os.environ.update(env)
    return server


def prepared_clips(root: Path, clips: int, shard_size: str) -> Path:
    """``clips`` copies of the real clip prepared with shards; the folder OUT."""
    from seqctx.cli import main

    source = root / "source.mp4"
    make_source(source, 340, 256)
    (root / "videos").mkdir()
    for k in range(clips):
        os.link(source, root / "videos" / f"c{k:03d}.mp4")
    (root / "clips.txt").write_text("".join(f"c{k:03d}.mp4 {k % 4}\n" for k in range(clips)))
    out = root / "out"
    args = ["data", "prepare", str(root / "clips.txt"), "--root", str(root / "videos"), "--out", str(out)]
    assert main([*args, "--shards", "--shard-size", shard_size, "--workers", "2"]) == 0
    return out


def rate(dataset, items: int) -> float:
    dataset.set_epoch(0)
    dataset[0]  # warm-up: the helper process, the connection
    start = time.perf_counter()
    for i in range(items):
        dataset.set_epoch(1 + i // len(dataset))
        dataset[i % len(dataset)]
    return items / (time.perf_counter() - start)


def throughput(root: Path, clips: int, items: int, shard_size: str) -> list[dict[str, object]]:
    import s3fs

    from seqctx.video.data import VideoListDataset, build_sampler, build_transform
    from seqctx.video.data.shards import ShardDataset

    out = prepared_clips(root, clips, shard_size)
    fs = s3fs.S3FileSystem()
    fs.mkdir("bench-clips")
    fs.put(str(out / "shards"), "bench-clips/k", recursive=True)
    common = {
        "sampler": build_sampler("segments", train=True, num_segments=8),
        "transform": build_transform(True, size=224), "on_error": "raise", "decode_timeout": 120.0,
    }  # fmt: skip
    datasets = {
        "files": VideoListDataset(out / "clips.txt", out, **common),
        "local shards": ShardDataset(str(out / "shards" / "clips" / "index.json"), **common),
        "s3 shards (loopback)": ShardDataset("s3://bench-clips/k/clips/index.json", **common),
    }
    rates = {name: [] for name in datasets}
    for _ in range(3):  # interleaved rounds: noise hits every reader alike
        for name, dataset in datasets.items():
            rates[name].append(rate(dataset, items))
    best = {name: float(np.median(v)) for name, v in rates.items()}
    shards = len(list((out / "shards" / "clips").glob("*.tar")))
    return [
        {"reader": name, "items/s": v, "x files": v / best["files"], "clips": clips, "shards": shards}
        for name, v in best.items()
    ]


def startup_child(kind: str, path: str) -> None:
    """Build the data set of ``path`` in this fresh process; print seconds and RSS growth (MiB)."""
    import fsspec.core

    from seqctx.video.data import build_dataset

    if kind == "shards":
        fsspec.core.url_to_fs(path)  # the file system's own imports (s3fs, aiobotocore) before the count
    before = rss_mib()
    start = time.perf_counter()
    dataset = build_dataset(path, "/data", format=kind, decode_timeout=None)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "rss_mib": rss_mib() - before, "samples": len(dataset)}))


def rss_mib() -> float:
    """This process's resident memory now (MiB), from /proc (not the peak: imports peak higher)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def startup(root: Path) -> list[dict[str, object]]:
    """A 240k-sample index, list file and Kinetics CSV of the same made-up videos."""
    import s3fs

    from seqctx.video.data.shards import ShardIndex

    rng = np.random.default_rng(0)
    ids = [f"{''.join(rng.choice(list('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-'), 11))}"
           f"_{k % 1000:06d}_{k % 1000 + 10:06d}" for k in range(SAMPLES)]  # fmt: skip
    labels = rng.integers(0, CLASSES, SAMPLES)
    classes = [f"class {c:03d}" for c in range(CLASSES)]
    per_shard = 1000  # about 1 GB of 256p clips
    sizes = rng.integers(300_000, 1_500_000, SAMPLES)
    offsets = np.zeros(SAMPLES, np.int64)
    for start in range(0, SAMPLES, per_shard):
        chunk = sizes[start : start + per_shard] + 1536  # the members' headers and the JSON
        offsets[start : start + per_shard] = np.concatenate([[0], np.cumsum(chunk)[:-1]]) + 1024
    shards = [{"name": f"train-{s:06d}.tar", "samples": per_shard, "bytes": int(sizes[s * per_shard:(s + 1) * per_shard]
               .sum())} for s in range(SAMPLES // per_shard)]  # fmt: skip
    samples = {"id": ids, "label": labels, "frames": np.full(SAMPLES, 300), "fps": np.full(SAMPLES, 30.0),
               "shard": np.arange(SAMPLES) // per_shard, "offset": offsets, "size": sizes}  # fmt: skip
    index = ShardIndex(str(root / "index.json"), classes, {"short_side": 256}, shards, samples)
    (root / "index.json").write_text(json.dumps(index.to_json(), separators=(",", ":")))
    (root / "train.txt").write_text("".join(f"{v}.mp4 {y}\n" for v, y in zip(ids, labels, strict=True)))
    csv_rows = [
        f"{classes[y]},{v[:11]},{int(v[12:18])},{int(v[19:])},train\n" for v, y in zip(ids, labels, strict=True)
    ]
    (root / "train.csv").write_text("label,youtube_id,time_start,time_end,split\n" + "".join(csv_rows))
    fs = s3fs.S3FileSystem()
    fs.mkdir("bench-index")
    fs.put(str(root / "index.json"), "bench-index/k/index.json")
    rows = []
    for name, kind, path in (
        ("shard index (local)", "shards", root / "index.json"),
        ("shard index (s3, loopback)", "shards", "s3://bench-index/k/index.json"),
        ("list file", "list", root / "train.txt"),
        ("Kinetics CSV", "kinetics", root / "train.csv"),
    ):
        runs = []
        for _ in range(3):
            done = subprocess.run([sys.executable, __file__, "--child", kind, str(path)], capture_output=True,
                                  text=True, check=True)  # fmt: skip
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        rows.append({"annotation": name, "samples": runs[0]["samples"],
                     "bytes": (root / Path(str(path)).name).stat().st_size,
                     "seconds": float(np.median([r["seconds"] for r in runs])),
                     "RSS MiB": float(np.median([r["rss_mib"] for r in runs]))})  # fmt: skip
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=24, help="prepared clips (copies of the real one)")
    p.add_argument("--items", type=int, default=24, help="items timed per reader and round")
    p.add_argument("--shard-size", default="4M", help="data prepare --shard-size")
    p.add_argument("--out", default="bench_results/shards.json")
    p.add_argument("--tables", nargs="+", choices=["throughput", "startup"], default=["throughput", "startup"])
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        startup_child(*args.child)
        return
    torch.set_num_threads(1)
    assert REAL.is_file(), REAL
    results: dict[str, object] = {"clips": args.clips, "items": args.items, "shard_size": args.shard_size}
    server = s3_server()
    try:
        for name in args.tables:
            with tempfile.TemporaryDirectory() as tmp:
                if name == "throughput":
                    rows = throughput(Path(tmp), args.clips, args.items, args.shard_size)
                else:
                    rows = startup(Path(tmp))
            results[name] = rows
            print_table(rows, list(rows[0]))
    finally:
        server.terminate()
        server.wait()
    write_json(args.out, results)


if __name__ == "__main__":
    main()
