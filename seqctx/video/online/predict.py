"""``seqctx predict --stream``: an online TSM (a checkpoint, or its ``export --online`` ONNX file)
over a stream, frame by frame: each processed frame's top-k and the smoothed top-k, its latency,
and the stream's frames per second."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from seqctx.errors import UserError

from .sources import stream_frames
from .stream import StreamingRecognizer


@dataclass
class FrameResult:
    frame: int  # the frame's number in the stream (0-based; every `every`-th is processed)
    latency_ms: float  # the recogniser's time for this frame
    top: list[tuple[str, float]]  # this frame's softmax top-k
    smoothed: list[tuple[str, float]]  # the mean of the last frames' softmax, top-k


@dataclass
class StreamStats:
    """What a stream took: frames read and processed, wall time, per-frame latencies (ms)."""

    read: int = 0
    latencies: list[float] = field(default_factory=list)
    start: float = field(default_factory=time.perf_counter)

    def summary(self) -> str:
        seconds = time.perf_counter() - self.start
        if not self.latencies:
            return f"{self.read} frames read, none processed"
        lat = np.asarray(self.latencies)
        return (
            f"{self.read} frames read, {len(lat)} processed in {seconds:.1f} s: {len(lat) / seconds:.1f} frames/s; "
            f"latency per frame {np.median(lat):.1f} ms median, {np.percentile(lat, 90):.1f} ms p90"
        )


def _top(scores: torch.Tensor, classes: Sequence[str], k: int) -> list[tuple[str, float]]:
    values, indices = scores.topk(min(k, len(scores)))
    return [
        (classes[i] if i < len(classes) else str(i), float(v)) for v, i in zip(values, indices.tolist(), strict=True)
    ]


def load_recognizer(
    checkpoint: str | Path | None, onnx: str | Path | None, overrides: Sequence[str] = (), smoothing: int = 8
) -> tuple[StreamingRecognizer, list[str], int, int | None]:
    """``(recognizer, classes, size, scale_size)`` from a checkpoint (PyTorch) or an online ONNX file."""
    from seqctx.video.engine.config import config_from_dict

    if onnx is not None:
        from .onnx import OnnxFrameNet

        net = OnnxFrameNet(onnx)
        data = config_from_dict(net.config).data
        return StreamingRecognizer(net, smoothing), net.classes, net.size, data.scale_size
    from seqctx.video.engine.evaluate import load_trained_model

    cfg, model, classes = load_trained_model(None, str(checkpoint), list(overrides))
    try:
        recognizer = StreamingRecognizer(model.cpu().float(), smoothing)
    except ValueError as e:
        raise UserError(f"{checkpoint}: {e}; use `seqctx predict` on whole videos") from None
    return recognizer, list(classes), cfg.data.size, cfg.data.scale_size


def predict_stream(
    source: str, recognizer: StreamingRecognizer, classes: Sequence[str], size: int, scale_size: int | None,
    stats: StreamStats, every: int = 1, warmup: int = 0, k: int = 5,
) -> Iterator[FrameResult]:  # fmt: skip
    """Run ``recognizer`` on every ``every``-th frame of ``source``; yield a result for each
    processed frame after the first ``warmup`` processed ones (the buffers and the smoothing fill
    up during those). ``stats`` counts as it goes (a stopped stream still has its numbers)."""
    if every < 1 or warmup < 0 or k < 1:
        raise UserError(f"--every must be >= 1, --warmup >= 0 and --top >= 1; got {every}, {warmup}, {k}")
    recognizer.reset()
    for number, frame in enumerate(stream_frames(source, size, scale_size)):
        stats.read += 1
        if number % every:
            continue
        start = time.perf_counter()
        logits, smoothed = recognizer.step(frame)
        stats.latencies.append((time.perf_counter() - start) * 1000)
        if len(stats.latencies) > warmup:
            yield FrameResult(number, stats.latencies[-1], _top(logits.softmax(-1), classes, k),
                              _top(smoothed, classes, k))  # fmt: skip
