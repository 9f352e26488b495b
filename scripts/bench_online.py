"""Online vs offline TSM on this machine, side by side in one run: the time to recognise a new
frame of a stream with an online TSM (one frame through the network, the shift buffers carried),
against an offline TSM that recognises the stream over a sliding window (the last 8 frames as a
clip, recomputed for each new frame: what a clip model does on a camera, e.g. mmaction2's webcam
demo), in PyTorch (eager) and onnxruntime, for TSM-R50 and TSM-R18 at 224x224, batch 1.

Both models take uint8 frames with the normalisation inside (the exported graphs of ``seqctx
export`` and ``export --online``). Times are medians of interleaved rounds; one thread per process
is not forced (PyTorch and onnxruntime use the machine's cores).

Usage: ``python scripts/bench_online.py [--rounds 10] [--models tsm_r18,tsm_r50] [--out bench_results/online.json]``
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from benchlib import device_info, print_table, time_interleaved, write_json

from seqctx.video.export import ClipRecognizer
from seqctx.video.models import build_model
from seqctx.video.online import OnlineFrameNet

SIZE, FRAMES, CLASSES = 224, 8, 174


def onnx_session(module: torch.nn.Module, inputs: tuple, path: Path) -> ort.InferenceSession:
    with torch.no_grad():
        program = torch.onnx.export(module, inputs, dynamo=True, opset_version=18, verbose=False)
    program.save(str(path))
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def bench(name: str, rounds: int, folder: Path) -> list[dict[str, object]]:
    torch.manual_seed(0)
    online = build_model(name, CLASSES, num_segments=FRAMES, shift="online", dropout=0.0).eval()
    offline = build_model(name, CLASSES, num_segments=FRAMES, dropout=0.0).eval()
    net, clip_model = OnlineFrameNet(online), ClipRecognizer(offline).eval()
    frame = torch.randint(0, 256, (1, SIZE, SIZE, 3), dtype=torch.uint8)
    clip = torch.randint(0, 256, (1, FRAMES, SIZE, SIZE, 3), dtype=torch.uint8)
    buffers = net.initial_buffers(1, SIZE, SIZE)
    online_session = onnx_session(net, (frame, *buffers), folder / f"{name}_online.onnx")
    clip_session = onnx_session(clip_model, (clip,), folder / f"{name}_clip.onnx")
    feed_online = {i.name: x.numpy() for i, x in zip(online_session.get_inputs(), (frame, *buffers), strict=True)}
    feed_clip = {clip_session.get_inputs()[0].name: clip.numpy()}

    def eager_online() -> None:
        with torch.no_grad():
            net(frame, *buffers)

    def eager_clip() -> None:
        with torch.no_grad():
            clip_model(clip)

    times = time_interleaved(
        {
            "eager online": eager_online, "eager clip": eager_clip,
            "onnx online": lambda: online_session.run(None, feed_online),
            "onnx clip": lambda: clip_session.run(None, feed_clip),
        },
        torch.device("cpu"), rounds=rounds,
    )  # fmt: skip
    rows = []
    for runtime in ("eager", "onnx"):
        per_frame, window = times[f"{runtime} online"] * 1000, times[f"{runtime} clip"] * 1000
        rows.append({
            "model": name, "runtime": "PyTorch eager" if runtime == "eager" else "onnxruntime",
            "online ms/frame": per_frame, "window ms/frame": window, "window/online": window / per_frame,
            "online max fps": 1000 / per_frame, "window max fps": 1000 / window,
        })  # fmt: skip
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--models", default="tsm_r18,tsm_r50")
    p.add_argument("--out", default="bench_results/online.json")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            rows += bench(name, args.rounds, Path(tmp))
            print(f"done {name}", flush=True)
    print_table(rows, list(rows[0]))
    write_json(args.out, {"device": device_info(torch.device("cpu")), "size": SIZE, "frames": FRAMES,
                          "threads": torch.get_num_threads(), "ort": ort.__version__, "rows": rows,
                          "numpy": np.__version__})  # fmt: skip


if __name__ == "__main__":
    main()
