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
from collections.abc import Callable, Sequence
from functools import partial
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


def items_per_second(run: Callable[[int], object], items: int, min_seconds: float = 3.0) -> float:
    """Items per second over at least ``items`` items and ``min_seconds`` (a small clip's 8 items
    take 0.2 s, where this machine's noise was +-20%)."""
    run(0)  # warm-up: page cache, helper process
    start, done = time.perf_counter(), 0
    while done < items or time.perf_counter() - start < min_seconds:
        run(done)
        done += 1
    return done / (time.perf_counter() - start)


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


def make_sources(root: Path, names: Sequence[str] = tuple(SIZES)) -> None:
    """The sources ``names`` (of :data:`SIZES`) and their list files, once."""
    for name in names:
        width, height = SIZES[name]
        if not (root / f"{name}.mp4").is_file():
            make_source(root / f"{name}.mp4", width, height)
            (root / f"{name}.txt").write_text(f"{name}.mp4 0\n")


def ssv2_clips() -> dict[str, Path]:
    """The repository's Something-Something v2 clips (240p VP9 WebM), by row name."""
    return {f"SSv2 {p.name}": p for p in sorted((REAL.parents[1] / "ssv2" / "videos").glob("*.webm"))}


def median_of_rounds(measure: Callable[[str], float], keys: Sequence[str], rounds: int = 3) -> dict[str, float]:
    """``measure(key)`` for every key, ``rounds`` interleaved rounds (machine noise hits every key
    alike), the median per key."""
    import statistics

    runs: dict[str, list[float]] = {k: [] for k in keys}
    for _ in range(rounds):
        for k in keys:
            runs[k].append(measure(k))
    return {k: statistics.median(v) for k, v in runs.items()}


def backends(root: Path, items: int) -> list[dict[str, object]]:
    """The training item at ``data.decode_short_side=256`` read by each installed backend, H.264
    at three sizes and Something-Something v2's WebM (the order ``data.backend: auto`` follows is
    defended by this table): median of 3 interleaved rounds."""
    from seqctx.video.data import build_sampler, installed_backends

    make_sources(root)
    lists = {name: root / f"{name}.txt" for name in SIZES}
    for name, clip in ssv2_clips().items():
        lists[name] = root / f"{clip.stem}.txt"
        lists[name].write_text(f"{clip.resolve()} 0\n")
    rows = []
    for name, annotation in lists.items():
        for sampling, (kind, length, interval) in SAMPLERS.items():
            sampler = build_sampler(kind, train=True, num_segments=length, frame_interval=interval)
            rates = median_of_rounds(
                lambda b, a=annotation, s=sampler: items_per_second(pipeline(a, root, s, 256, b), items),
                installed_backends(),
            )
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


def mmaction2_pipeline(path: Path, sampling: str, packed: bool) -> Callable[[int], object]:
    """mmaction2 1.2.0's video pipeline for the same item (DecordInit -> SampleFrames ->
    DecordDecode -> Resize to a short side of 256 -> CenterCrop 224), in test mode; ``packed``:
    then FormatShape('NCTHW') and PackActionInputs, as its test configs end (a model's input
    tensor, which seqctx's item is)."""
    from mmaction.datasets.transforms import (
        CenterCrop,
        DecordDecode,
        DecordInit,
        FormatShape,
        PackActionInputs,
        Resize,
        SampleFrames,
    )  # fmt: skip

    kind, length, interval = SAMPLERS[sampling]
    sample = (SampleFrames(clip_len=1, frame_interval=1, num_clips=length, test_mode=True) if kind == "segments"
              else SampleFrames(clip_len=length, frame_interval=interval, num_clips=1, test_mode=True))  # fmt: skip
    steps = [DecordInit(num_threads=1), sample, DecordDecode(), Resize(scale=(-1, 256)), CenterCrop(crop_size=224)]
    if packed:
        steps += [FormatShape(input_format="NCTHW"), PackActionInputs()]

    def run(i: int) -> object:
        item: dict = {"filename": str(path), "start_index": 0, "modality": "RGB"}
        for step in steps:
            item = step(item)
        return item["inputs"] if packed else item["imgs"]

    return run


def seqctx_eval_item(
    root: Path, path: Path, sampler, timeout: float | None, short_side: int | None = 256, backend: str = "auto"
) -> Callable[[int], object]:
    """seqctx's evaluation item for the same clip: segment centres or one dense clip, short side
    256 (``data.scale_size``), centre crop 224, decoding under ``data.decode_timeout`` at
    ``data.decode_short_side`` (256, as the Kinetics configs set it)."""
    from seqctx.video.data import VideoListDataset, build_transform

    (root / "eval.txt").write_text(f"{path.resolve()} 0\n")  # an absolute path: read as given
    ds = VideoListDataset(
        root / "eval.txt", root, on_error="raise", decode_timeout=timeout, sampler=sampler, short_side=short_side,
        transform=build_transform(False, size=224, scale_size=256), backend=backend,
    )  # fmt: skip
    return lambda i: ds[0]


PIPELINES = ("mmaction2", "mmaction2 packed", "seqctx", "seqctx no limit", "seqctx full decode", "seqctx decord",
             "decord alone")  # fmt: skip


def rate_child(pipeline: str, path: str, sampling: str, items: int) -> None:
    """Items/s of one pipeline on one clip, in this fresh process (printed as JSON): each library
    alone in its process and environment, as its users run it (importing mmaction2's OpenCV
    beside seqctx slowed seqctx's transform 1.6x in one process)."""
    torch.set_num_threads(1)
    if pipeline.startswith("mmaction2"):
        import cv2 as opencv

        opencv.setNumThreads(0)  # mmengine's default for training (env_cfg opencv_num_threads=0)
        run = mmaction2_pipeline(Path(path), sampling, packed=pipeline.endswith("packed"))
    else:
        from seqctx.video.data import build_sampler

        kind, length, interval = SAMPLERS[sampling]
        sampler = build_sampler(kind, train=False, num_segments=length, frame_interval=interval)
        if pipeline == "decord alone":
            run = decord_alone(Path(path), sampler, None)
        else:
            timeout = None if pipeline == "seqctx no limit" else 120.0
            short_side = None if pipeline == "seqctx full decode" else 256
            backend = "decord" if pipeline == "seqctx decord" else "auto"
            with tempfile.TemporaryDirectory() as tmp:
                run = seqctx_eval_item(Path(tmp), Path(path), sampler, timeout, short_side, backend)
    print(json.dumps(items_per_second(run, items)))


def rate_in_child(pipeline: str, path: Path, sampling: str, items: int, python: str) -> float:
    """:func:`rate_child` in a fresh process: mmaction2's pipelines under ``python``, seqctx's here."""
    exe = python if pipeline.startswith("mmaction2") else sys.executable
    out = subprocess.run([exe, __file__, "--rate", pipeline, str(path), sampling, str(items)], check=True,
                         capture_output=True, text=True).stdout  # fmt: skip
    return json.loads(out.split()[-1])


def mmaction2(root: Path, items: int, python: str, sources: Sequence[str] = ()) -> list[dict[str, object]]:
    """seqctx against mmaction2 1.2.0's pipeline on the same clips, and against decord alone (its
    ``get_batch`` of the item's frames): items/s ratios, each measurement in a fresh process,
    interleaved rounds. ``python``: an interpreter where mmaction2 imports (a side environment:
    ``pip install --no-deps mmaction2==1.2.0 mmengine mmcv-lite==2.1.0`` plus ``addict yapf
    termcolor rich opencv-python-headless``, torch and decord). ``sources``: only the clips whose
    names contain one of these (all when empty)."""
    clips = {name: root / f"{name}.mp4" for name in SIZES} | ssv2_clips()
    clips = {name: path for name, path in clips.items() if not sources or any(s in name for s in sources)}
    make_sources(root, [name for name in clips if name in SIZES])
    rows = []
    for name, path in clips.items():
        for sampling in SAMPLERS:
            best = median_of_rounds(partial(rate_in_child, path=path, sampling=sampling, items=items, python=python),
                                    PIPELINES)  # fmt: skip
            rows.append({
                "source": name, "sampling": sampling, **{f"{k} it/s": v for k, v in best.items()},
                "seqctx/mmaction2": best["seqctx"] / best["mmaction2"],
                "seqctx/mmaction2 packed": best["seqctx"] / best["mmaction2 packed"],
                "seqctx/decord": best["seqctx"] / best["decord alone"],
                "decord/mmaction2": best["seqctx decord"] / best["mmaction2"],
                "no limit/mmaction2": best["seqctx no limit"] / best["mmaction2"],
                "full decode/mmaction2": best["seqctx full decode"] / best["mmaction2"],
            })  # fmt: skip
            print(f"mmaction2 {name} {sampling}", flush=True)
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
    p.add_argument("--tables", nargs="+", choices=["throughput", "backends", "memory", "mmaction2"],
                   default=["throughput", "backends", "memory"])  # fmt: skip
    p.add_argument(
        "--mmaction2-python",
        default=sys.executable,
        help="the mmaction2 table: an interpreter where mmaction2 1.2.0 imports (a side environment)",
    )
    p.add_argument("--sources", nargs="+", default=[], help="the mmaction2 table: only clips whose names contain one")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    p.add_argument("--rate", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        rss_growth_child(*args.child)
        return
    if args.rate:
        rate_child(*args.rate[:3], int(args.rate[3]))
        return
    torch.set_num_threads(1)
    tables = {"throughput": throughput, "backends": backends, "memory": lambda root, _: memory(root),
              "mmaction2": lambda root, items: mmaction2(root, items, args.mmaction2_python, args.sources)}  # fmt: skip
    results: dict[str, object] = {"items": args.items}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.tables:
            rows = tables[name](Path(tmp), args.items)
            results[name] = rows
            print_table(rows, list(rows[0]))
    write_json(args.out, results)


if __name__ == "__main__":
    main()
