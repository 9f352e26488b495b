"""Forward+backward clips/s, peak memory and FLOPs of each backbone with and without each context
operator, as ratios to the plain backbone measured in the same run.

Full size: 8x224x224 clips for TSN/TSM, 32x224x224 for P3D/I3D. ``--small``: 8x112x112 and
16x112x112 (a CPU-friendly run). FLOPs per clip (forward) come from ``torch.utils.flop_counter``.

Usage: ``python scripts/bench_models.py [--small] [--device cuda] [--models tsm_r50,...]
[--contexts cgc,gct] [--out ...]``
"""

from __future__ import annotations

import argparse
from functools import partial

import torch
from benchlib import device_info, peak_memory_bytes, print_table, time_interleaved, write_json
from torch.utils.flop_counter import FlopCounterMode

from seqctx.video.models import MODELS, build_model

DEFAULT_MODELS = ["tsn_r50", "tsm_r50", "p3d_r50", "i3d_r50"]


def train_step(model: torch.nn.Module, clip: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    model(clip).sum().backward()


def forward_flops(model: torch.nn.Module, clip: torch.Tensor) -> int:
    counter = FlopCounterMode(display=False)
    model.eval()  # one clip: BatchNorm over a 1x1x1 map (GE-theta's gather) needs running stats
    with counter, torch.no_grad():
        model(clip)
    model.train()
    return counter.get_total_flops()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="112x112 frames, 16-frame 3D clips")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--models", default=",".join(DEFAULT_MODELS))
    p.add_argument("--contexts", help="comma-separated contexts to compare with the plain model (default: all)")
    p.add_argument("--batch", type=int, default=None, help="clips per step (default 8 on GPU, 2 on CPU)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default="bench_results/models.json")
    args = p.parse_args()
    device = torch.device(args.device)
    batch = args.batch or (8 if device.type == "cuda" else 2)
    size = 112 if args.small else 224
    rows: list[dict[str, object]] = []
    for name in args.models.split(","):
        info = MODELS[name]
        is3d = info.family.dims == 3
        frames = (16 if args.small else 32) if is3d else 8
        clip = torch.randn(batch, 3, frames, size, size, device=device)
        models = {}
        wanted = info.contexts if args.contexts is None else [c for c in args.contexts.split(",") if c in info.contexts]
        for context in (None, *wanted):
            model = build_model(name, 174, num_segments=frames, context=context, input_size=size).to(device)
            models[str(context)] = model

        steps = {k: partial(train_step, m, clip) for k, m in models.items()}
        times = time_interleaved(steps, device, args.rounds, warmup=1)
        for k, model in models.items():
            mem = peak_memory_bytes(steps[k], device)
            flops = forward_flops(model, clip[:1])
            rows.append(
                {
                    "model": name,
                    "context": k,
                    "clip": f"{frames}x{size}x{size}",
                    "params_M": sum(q.numel() for q in model.parameters()) / 1e6,
                    "GFLOPs": flops / 1e9,
                    "clips_s": batch / times[k],
                    "mem_MB": mem / 2**20,
                }
            )
        base = next(r for r in rows if r["model"] == name and r["context"] == "None")
        for r in rows:
            if r["model"] == name:
                r["speed_ratio"] = r["clips_s"] / base["clips_s"]
                r["mem_ratio"] = r["mem_MB"] / base["mem_MB"]
                r["flops_ratio"] = r["GFLOPs"] / base["GFLOPs"]
        print(f"done {name}", flush=True)
        del models
    cols = ["model", "context", "clip", "params_M", "GFLOPs", "flops_ratio", "clips_s", "speed_ratio", "mem_MB"]
    print_table(rows, [*cols, "mem_ratio"])
    write_json(args.out, {"info": device_info(device), "batch": batch, "small": args.small, "rows": rows})


if __name__ == "__main__":
    main()
