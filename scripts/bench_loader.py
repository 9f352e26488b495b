"""Items/s of the video pipeline at the sizes Kinetics is downloaded at, side by side in one run:
full decoding, ``data.decode_short_side=256``, a ``seqctx data prepare`` copy, and decord alone at
each decode size (the ceiling); and the peak memory of one 10-clip test item.

Sources: the real 340x256 Kinetics clip of ``tests/data`` (332 frames, 30 fps), scaled to 1920x1080,
1280x720 and kept at 340x256, H.264 with a keyframe every 250 frames (as downloaded videos). Samplers:
TSN 8 segments and dense 32 frames at interval 2, training transforms (multi-scale crop to 224,
flip). The pipeline is the dataset as ``seqctx train`` builds it (decoding in the time-limit helper,
``data.decode_timeout``), read in this process (no DataLoader workers: the per-item cost). The
prepared copy: short side 256, a keyframe every 16 frames.

Memory: one test item, 10 dense clips of 32x2 and 3 crops of 256, from the 1080p source, each
setting in a fresh process (peak RSS growth over the RSS after imports): "before" is how items were
loaded until now (every frame decoded at full size, then gathered into a second copy in clip
order), "now" decodes once and gathers per clip, at full size and at short side 256.

Usage: ``python scripts/bench_loader.py [--items 6] [--out bench_results/loader.json]``
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from benchlib import print_table, write_json

REAL = Path(__file__).resolve().parents[1] / "tests" / "data" / "kinetics" / "SOX5yA1l24A_000299_000309.mp4"
SIZES = {"1920x1080": (1920, 1080), "1280x720": (1280, 720), "340x256": (340, 256)}
SAMPLERS = {"tsn 8 seg": ("segments", 8, 1), "dense 32x2": ("dense", 32, 2)}


def make_source(path: Path, width: int, height: int, keyint: int = 250) -> None:
    """The real clip scaled to ``width x height``, H.264 with a long keyframe interval."""
    import av

    with av.open(str(REAL)) as src, av.open(str(path), "w") as out:
        rate = src.streams.video[0].average_rate
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"g": str(keyint), "keyint_min": str(keyint), "preset": "veryfast", "crf": "20"}
        for i, frame in enumerate(src.decode(video=0)):
            scaled = frame.reformat(width=width, height=height, format="yuv420p", interpolation="BICUBIC")
            scaled.pts, scaled.time_base = i, 1 / rate  # frame i at i / rate seconds
            out.mux(stream.encode(scaled))
        out.mux(stream.encode())


def items_per_second(run: Callable[[int], object], items: int) -> float:
    run(0)  # warm-up: page cache, helper process
    start = time.perf_counter()
    for i in range(items):
        run(i)
    return items / (time.perf_counter() - start)


def decord_alone(path: Path, sampler, short_side: int | None) -> Callable[[int], object]:
    """decord by itself: open, sample, ``get_batch`` of the item's frames (resized in the decoder to
    the same size as seqctx's ``short_side``)."""
    import av
    import decord
    import numpy as np

    from seqctx.video.data.backends import scaled_size

    options = {}
    if short_side:
        with av.open(str(path)) as c:
            height, width = scaled_size(c.streams.video[0].height, c.streams.video[0].width, short_side)
        options = {"width": width, "height": height}

    def run(i: int) -> object:
        vr = decord.VideoReader(str(path), num_threads=1, **options)
        clips = sampler(len(vr), rng=np.random.default_rng(i))
        return vr.get_batch(sorted({f for clip in clips for f in clip})).asnumpy()

    return run


def pipeline(
    annotation: Path, folder: Path, sampler, short_side: int | None, backend: str = "auto"
) -> Callable[[int], object]:
    """The training item as ``seqctx train`` loads it (epoch ``i``: a new random draw)."""
    from seqctx.video.data import VideoListDataset, build_transform

    ds = VideoListDataset(
        annotation, folder, sampler=sampler, transform=build_transform(True, size=224), on_error="raise",
        short_side=short_side, decode_timeout=120.0, backend=backend,
    )  # fmt: skip
    return lambda i: (ds.set_epoch(i), ds[0])


def make_sources(root: Path) -> None:
    """The three sources and their list files, once."""
    for name, (width, height) in SIZES.items():
        if not (root / f"{name}.mp4").is_file():
            make_source(root / f"{name}.mp4", width, height)
            (root / f"{name}.txt").write_text(f"{name}.mp4 0\n")


def backends(root: Path, items: int) -> list[dict[str, object]]:
    """The training item at ``data.decode_short_side=256`` read by each installed backend (the
    order ``data.backend: auto`` follows is defended by this table)."""
    from seqctx.video.data import build_sampler, installed_backends

    make_sources(root)
    rows = []
    for name in SIZES:
        for sampling, (kind, length, interval) in SAMPLERS.items():
            sampler = build_sampler(kind, train=True, num_segments=length, frame_interval=interval)
            rates = {
                b: items_per_second(pipeline(root / f"{name}.txt", root, sampler, 256, b), items)
                for b in installed_backends()
            }
            ratios = {f"{b}/decord": v / rates["decord"] for b, v in rates.items() if b != "decord"}
            rows.append({"source": name, "sampling": sampling, **{f"{b} it/s": v for b, v in rates.items()}, **ratios})
            print(f"backends {name} {sampling}", flush=True)
    return rows


def throughput(root: Path, items: int) -> list[dict[str, object]]:
    from seqctx.video.data import VideoListDataset, build_sampler
    from seqctx.video.data.prepare import prepare_dataset

    make_sources(root)
    rows = []
    for name in SIZES:
        source = root / f"{name}.mp4"
        prepared = root / f"prepared_{name}"
        prepare_dataset(VideoListDataset(root / f"{name}.txt", root), root / f"{name}.txt", prepared, 256,
                        keyint=16, progress=False)  # fmt: skip
        print(f"made {name}", flush=True)
        for sampling, (kind, length, interval) in SAMPLERS.items():
            sampler = build_sampler(kind, train=True, num_segments=length, frame_interval=interval)
            rates = {
                "full": items_per_second(pipeline(root / f"{name}.txt", root, sampler, None), items),
                "short 256": items_per_second(pipeline(root / f"{name}.txt", root, sampler, 256), items),
                "prepared": items_per_second(pipeline(prepared / f"{name}.txt", prepared, sampler, None), items),
                "decord full": items_per_second(decord_alone(source, sampler, None), items),
                "decord 256": items_per_second(decord_alone(source, sampler, 256), items),
            }
            rows.append({
                "source": name, "sampling": sampling, **{f"{k} it/s": v for k, v in rates.items()},
                "256/full": rates["short 256"] / rates["full"], "prepared/full": rates["prepared"] / rates["full"],
                "full/decord": rates["full"] / rates["decord full"],
                "256/decord 256": rates["short 256"] / rates["decord 256"],
            })  # fmt: skip
            print(f"done {name} {sampling}", flush=True)
    return rows


def rss_growth_child(setting: str, path: str) -> None:
    """One 10-clip x 3-crop test item in this (fresh) process; prints the peak RSS growth in MiB."""
    import numpy as np

    from seqctx.video.data import build_sampler, build_transform, open_video

    torch.set_num_threads(1)
    sampler = build_sampler("dense", train=False, num_segments=32, frame_interval=2, num_clips=10)
    transform = build_transform(False, size=256, scale_size=256, test_crops=3)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if setting == "before":  # every frame at full size, then a second copy in clip order
        source = open_video(path)
        clips = sampler(source.num_frames, rng=np.random.default_rng(0))
        frames, start, views = source.read([i for clip in clips for i in clip]), 0, []
        for clip in clips:
            views.append(transform(frames[start : start + len(clip)]))
            start += len(clip)
    else:
        from seqctx.video.data import VideoListDataset

        root = Path(path).parent
        (root / "one.txt").write_text(f"{Path(path).name} 0\n")
        ds = VideoListDataset(root / "one.txt", root, sampler=sampler, transform=transform, on_error="raise",
                              short_side=256 if setting == "now, short side 256" else None)  # fmt: skip
        views = [ds[0][0]]
    assert torch.cat(views).shape[0] == 30
    print(json.dumps((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024))


def memory(root: Path) -> list[dict[str, object]]:
    make_sources(root)
    source = root / "1920x1080.mp4"
    rows = []
    for setting in ("before", "now, full size", "now, short side 256"):
        out = subprocess.run([sys.executable, __file__, "--child", setting, str(source)], check=True,
                             capture_output=True, text=True).stdout  # fmt: skip
        rows.append({"10-clip x 3-crop test item, 1080p": setting, "peak RSS growth MiB": json.loads(out.split()[-1])})
    for row in rows:
        row["vs before"] = row["peak RSS growth MiB"] / rows[0]["peak RSS growth MiB"]
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=6, help="items timed per setting")
    p.add_argument("--out", default="bench_results/loader.json")
    p.add_argument("--tables", nargs="+", choices=["throughput", "backends", "memory"],
                   default=["throughput", "backends", "memory"])  # fmt: skip
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        rss_growth_child(*args.child)
        return
    torch.set_num_threads(1)
    tables = {"throughput": throughput, "backends": backends, "memory": lambda root, _: memory(root)}
    results: dict[str, object] = {"items": args.items}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.tables:
            rows = tables[name](Path(tmp), args.items)
            results[name] = rows
            print_table(rows, list(rows[0]))
    write_json(args.out, results)


if __name__ == "__main__":
    main()
