"""Clips/s and CPU time per clip of the video pipeline (decode + sample + transform through a
DataLoader with 0, 1, 2 workers), side by side with decord alone on the same indices (the ceiling)
and a straightforward PyAV decode-everything loader (what many codebases do).

Videos: generated 10 s 340x256 H.264 clips at 30 fps, with GOP 12 and GOP 250. Samplers: TSN
8 segments and dense 32 frames (interval 2).

Usage: ``python scripts/bench_loader.py [--videos 8] [--out bench_results/loader.json]``
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
from benchlib import print_table, write_json
from torch.utils.data import DataLoader

from seqctx.video.data import VideoListDataset, build_sampler, build_transform
from seqctx.video.data.synthetic import write_video


def make_video(path: Path, gop: int, seed: int, seconds: int = 10, fps: int = 30) -> None:
    """Smooth moving content (a drifting sinusoid and a moving disc) that encodes like real video."""
    rng = np.random.default_rng(seed)
    h, w, t = 256, 340, seconds * fps
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(0.01, 0.05, 3)
    frames = np.empty((t, h, w, 3), np.uint8)
    for i in range(t):
        img = 127 + 60 * np.sin(xx[..., None] * base + i * 0.05 + np.arange(3))
        cx, cy = (40 + 2 * i) % w, h / 2 + 60 * np.sin(i / 20)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < 900] = 230
        frames[i] = img.astype(np.uint8)
    write_video(path, frames, fps, gop)


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # DataLoader workers, once joined
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def measure(run: Callable[[], int]) -> tuple[float, float]:
    """(clips/s, CPU seconds per clip) of one pass."""
    c0, t0 = cpu_seconds(), time.perf_counter()
    clips = run()
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    return clips / wall, cpu / clips


def decord_alone(paths: list[Path], sampler) -> int:
    import decord

    for p in paths:
        vr = decord.VideoReader(str(p), num_threads=1)
        (indices,) = sampler(len(vr), rng=0)  # one training clip
        vr.get_batch(sorted(set(indices))).asnumpy()
    return len(paths)


def naive_pyav(paths: list[Path], sampler, transform) -> int:
    import av

    for p in paths:
        with av.open(str(p)) as c:
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        (idx,) = sampler(len(frames), rng=0)
        transform(torch.from_numpy(np.stack([frames[i] for i in idx])))
    return len(paths)


def pipeline(dataset, workers: int) -> int:
    loader = DataLoader(dataset, batch_size=1, num_workers=workers)
    return sum(1 for _ in loader)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, default=8, help="videos per GOP setting")
    p.add_argument("--out", default="bench_results/loader.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for gop in (12, 250):
            paths = []
            for i in range(args.videos):
                path = root / f"gop{gop}_{i}.mp4"
                make_video(path, gop, seed=i)
                paths.append(path)
            (root / f"gop{gop}.txt").write_text("".join(f"{q.name} 0\n" for q in paths))
            print(f"generated {len(paths)} videos with GOP {gop}", flush=True)
            for mode, kind, n, interval in (("tsn 8 seg", "segments", 8, 1), ("dense 32x2", "dense", 32, 2)):
                sampler = build_sampler(kind, train=True, num_segments=n, frame_interval=interval)
                transform = build_transform(True, size=224)
                ds = VideoListDataset(root / f"gop{gop}.txt", root, sampler=sampler, transform=transform)
                results = {
                    "decord alone": measure(partial(decord_alone, paths, sampler)),
                    "naive pyav": measure(partial(naive_pyav, paths, sampler, transform)),
                }
                for w in (0, 1, 2):
                    results[f"seqctx {w} workers"] = measure(partial(pipeline, ds, w))
                ceiling = results["decord alone"][0]
                naive = results["naive pyav"][0]
                for name, (rate, cpu) in results.items():
                    rows.append({
                        "gop": gop, "sampling": mode, "loader": name, "clips_s": rate, "cpu_s_per_clip": cpu,
                        "vs_decord": rate / ceiling, "vs_naive": rate / naive,
                    })  # fmt: skip
                print(f"done GOP {gop} {mode}", flush=True)
    print_table(rows, ["gop", "sampling", "loader", "clips_s", "cpu_s_per_clip", "vs_decord", "vs_naive"])
    write_json(args.out, {"videos": args.videos, "rows": rows})


if __name__ == "__main__":
    main()
