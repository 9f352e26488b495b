"""Per-clip latency of exported recognizers on the CPU: onnxruntime against eager PyTorch, side by
side in one run (interleaved rounds), for TSM-R50 and TSM-R50+CGC at 8 x 224 x 224, batch 1.

Each model is exported as ``seqctx export`` does (:func:`seqctx.video.export.export_checkpoint`,
from a checkpoint of freshly initialised weights with BatchNorm statistics set by a few forwards),
then timed on the same uint8 clip: eager is ``ClipRecognizer`` under ``torch.no_grad``, onnxruntime
is the file with the same thread count. Targets (issue 23): onnxruntime no slower than eager for
the plain model, CGC within 1.5x of its eager time.

Usage: ``python scripts/bench_export.py [--models tsm_r50,tsm_r50+cgc] [--rounds 10] [--size 224]
[--out bench_results/export.json]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from benchlib import device_info, print_table, time_interleaved, write_json


def checkpoint(path: Path, name: str, context: str | None, frames: int, size: int) -> Path:
    from seqctx.video.engine.builders import make_model
    from seqctx.video.engine.checkpoint import save_checkpoint
    from seqctx.video.engine.config import config_from_dict

    model_cfg = {"name": name, "num_classes": 174, "num_segments": frames, "context": context, "dropout": 0.0}
    cfg = config_from_dict({"model": model_cfg, "data": {"size": size}})
    model = make_model(cfg).train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(2, 3, frames, size, size))
    save_checkpoint({"model": model.state_dict(), "config": cfg.to_dict(), "classes": [str(i) for i in range(174)],
                     "epoch": 0, "iteration": 0}, path)  # fmt: skip
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="tsm_r50,tsm_r50+cgc")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--out", default="bench_results/export.json")
    args = parser.parse_args()

    from seqctx.video.export import OnnxRecognizer, export_checkpoint
    from seqctx.video.export.deploy import example_clips

    threads = torch.get_num_threads()
    clip = example_clips(1, args.frames, args.size)
    rows, steps, exported = [], {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.models.split(","):
            name, _, context = spec.partition("+")
            ckpt = checkpoint(Path(tmp) / f"{spec}.pt", name, context or None, args.frames, args.size)
            t0 = time.perf_counter()
            info, eager = export_checkpoint(ckpt, Path(tmp) / f"{spec}.onnx")
            seconds = time.perf_counter() - t0
            runtime = OnnxRecognizer(info.path, threads=threads)
            with torch.no_grad():
                diff = float((torch.from_numpy(runtime.logits(clip.numpy())) - eager(clip)).abs().max())
            exported[spec] = (seconds, diff, info.path.stat().st_size / 2**20)

            def run_eager(model=eager) -> None:
                with torch.no_grad():
                    model(clip)

            def run_onnx(session=runtime) -> None:
                session.logits(clip.numpy())

            steps[f"{spec} eager"], steps[f"{spec} onnxruntime"] = run_eager, run_onnx
        times = time_interleaved(steps, torch.device("cpu"), rounds=args.rounds, warmup=2)
    for spec, (seconds, diff, mib) in exported.items():
        eager_s, ort_s = times[f"{spec} eager"], times[f"{spec} onnxruntime"]
        rows.append({"model": spec, "eager ms": 1000 * eager_s, "onnxruntime ms": 1000 * ort_s,
                     "ort / eager": ort_s / eager_s, "max |diff|": diff, "export s": seconds,
                     "file MiB": mib})  # fmt: skip
    print(f"per-clip latency, batch 1, {args.frames} x {args.size} x {args.size}, {threads} threads")
    print_table(rows, list(rows[0]))
    write_json(args.out, {"config": vars(args), "device": device_info(torch.device("cpu")), "rows": rows})


if __name__ == "__main__":
    main()
