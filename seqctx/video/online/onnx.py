"""The ONNX form of an online TSM (``seqctx export --online``): the graph ``(frame, *buffers) ->
(logits, *buffers)`` of :class:`~.stream.OnlineFrameNet` with the normalisation inside, the
buffers' names and shapes in its metadata, checked frame by frame against PyTorch with
onnxruntime; and :class:`OnnxFrameNet`, the same interface over onnxruntime for
:class:`~.stream.StreamingRecognizer` (``seqctx predict --stream --onnx``)."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from seqctx.errors import ConfigError, UserError
from seqctx.video.export.exporters import META_KEY, OPSET, drop_misshapen_zero_biases, metadata
from seqctx.video.export.runtime import open_session

from .stream import OnlineFrameNet

FRAME_LAYOUT = "uint8 (N, H, W, 3): one RGB frame of each of N streams; N is dynamic"


@dataclass
class ExportedOnline:
    path: Path
    size: int
    classes: list[str]
    buffers: list[dict[str, object]]  # name, shape of one stream's buffer
    max_abs_diff: float | None = None  # largest |onnxruntime - PyTorch| over a clip (verify)
    frames_checked: int = 0


def export_online(
    checkpoint: str | Path, out: str | Path, size: int | None = None, overrides: list[str] | None = None,
    optimize: bool = True,
) -> tuple[ExportedOnline, OnlineFrameNet]:  # fmt: skip
    """Export the checkpoint's online TSM as the frame-by-frame ONNX graph (inputs ``frame`` and
    ``buffer_0..``, outputs ``logits`` and ``buffer_0_next..``; the batch of streams dynamic);
    ``size``: the frames' side (default ``data.size``)."""
    import onnx

    from seqctx.outputs import output_file
    from seqctx.video.engine.evaluate import load_trained_model

    if not Path(checkpoint).is_file():
        raise UserError(f"no checkpoint at {checkpoint} (a latest.pt or best.pt of `seqctx train`)")
    if size is not None and size < 1:
        raise ConfigError(f"--size must be a positive number; got {size}")
    cfg, model, classes = load_trained_model(None, checkpoint, overrides or [])
    try:
        net = OnlineFrameNet(model.cpu().float())
    except ValueError as e:
        raise UserError(f"{checkpoint}: {e}; export it without --online") from None
    size = size or cfg.data.size
    frame = torch.randint(0, 256, (2, size, size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    buffers = net.initial_buffers(2, size, size)
    names = [f"buffer_{i}" for i in range(len(buffers))]
    out = output_file(out, "--out")
    meta = metadata(cfg.to_dict(), list(classes), 1, size)
    shapes = [{"name": n, "shape": list(b.shape[1:])} for n, b in zip(names, buffers, strict=True)]
    meta.update({"online": True, "input": FRAME_LAYOUT, "buffers": shapes,
                 "output": "logits (N, num_classes), then each buffer for the next frame (buffer_i_next)"})  # fmt: skip
    batch = torch.export.Dim("batch", min=1, max=4096)  # one for every input: the streams of a call
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*The axis name: batch will not be used")  # it is, on every input
        program = torch.onnx.export(
            net, (frame, *buffers), dynamo=True, opset_version=OPSET, input_names=["frame", *names],
            output_names=["logits", *[f"{n}_next" for n in names]],
            dynamic_shapes=({0: batch}, tuple({0: batch} for _ in buffers)), optimize=optimize, verbose=False,
        )  # fmt: skip
    proto = program.model_proto
    drop_misshapen_zero_biases(proto.graph)
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(meta)
    onnx.save(proto, str(out))
    return ExportedOnline(out, size, list(classes), shapes), net


class OnnxFrameNet:
    """An online ONNX file (``seqctx export --online``) with :class:`~.stream.OnlineFrameNet`'s
    call: ``(frame, *buffers) -> (logits, *buffers)`` on tensors, and ``initial_buffers``."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        self.session, meta = open_session(path, threads)
        if not meta.get("online"):
            raise UserError(f"{path} is a clip model: export the online TSM with `seqctx export --online`, or use "
                            "`seqctx predict --onnx` on whole videos")  # fmt: skip
        self.classes: list[str] = meta["classes"]
        self.size: int = meta["size"]
        self.config: dict = meta["config"]
        self.buffers: list[dict] = meta["buffers"]

    def initial_buffers(self, batch: int, height: int, width: int) -> list[torch.Tensor]:
        if (height, width) != (self.size, self.size):
            raise UserError(f"this ONNX file takes {self.size}x{self.size} frames, got {height}x{width}")
        return [torch.zeros(batch, *b["shape"]) for b in self.buffers]

    def __call__(self, frame: torch.Tensor, *buffers: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feed = {"frame": np.ascontiguousarray(frame.numpy(), dtype=np.uint8)}
        feed |= {b["name"]: buffer.numpy() for b, buffer in zip(self.buffers, buffers, strict=True)}
        return tuple(torch.from_numpy(x) for x in self.session.run(None, feed))


def verify_online(exported: ExportedOnline, net: OnlineFrameNet, frames: int = 16, seed: int = 0) -> ExportedOnline:
    """Run a clip of ``frames`` random frames through the file and through PyTorch, frame by frame
    with their own buffers; record the largest logit difference (:attr:`ExportedOnline.max_abs_diff`)."""
    g = torch.Generator().manual_seed(seed)
    clip = torch.randint(0, 256, (frames, 1, exported.size, exported.size, 3), dtype=torch.uint8, generator=g)
    runtime = OnnxFrameNet(exported.path)
    ours = net.initial_buffers(1, exported.size, exported.size)
    theirs = runtime.initial_buffers(1, exported.size, exported.size)
    worst = 0.0
    with torch.no_grad():
        for frame in clip:
            expected, *ours = net(frame, *ours)
            got, *theirs = runtime(frame, *theirs)
            worst = max(worst, float((got - expected).abs().max()))
    exported.max_abs_diff, exported.frames_checked = worst, frames
    return exported
