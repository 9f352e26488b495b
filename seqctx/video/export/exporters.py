"""Export a checkpoint's model to ONNX (the ``torch.onnx`` dynamo exporter, opset 18) or to a
``torch.export`` program (``.pt2``), with a dynamic batch dimension and the class names and
preprocessing inside the file, and compare the file's outputs with PyTorch's.

CGC's per-sample kernels stay per-sample for any batch: under ``torch.export`` its convolution
takes the windows with a depthwise convolution of one-hot kernels and multiplies them by each
sample's kernel (a batched matmul) instead of the batch-grouped convolution, whose ``group`` ONNX
would fix at the exported batch (:mod:`seqctx.modules.gated_conv`). TSM's shift is built by
concatenating slices, traced as the graph it is (the in-place shift of the official code exports
as a constant in the old TorchScript exporter: mit-han-lab/temporal-shift-module#77, #103, #181).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seqctx.errors import ConfigError, UserError

from .deploy import INPUT_LAYOUT, ClipRecognizer, example_clips

EXPORT_FORMATS = ("onnx", "pt2")
OPSET = 18
META_KEY = "seqctx"  # ONNX metadata_props key / torch.export extra file holding the metadata JSON


@dataclass
class ExportedModel:
    path: Path
    format: str
    frames: int
    size: int
    classes: list[str]
    max_abs_diff: dict[int, float] = field(default_factory=dict)  # batch -> largest |file - PyTorch| (verify)


def metadata(cfg_dict: dict, classes: list[str], frames: int, size: int) -> dict:
    """What a consumer needs: the input layout, frames, size, class names, and the run's config
    (its data section tells how clips were sampled and resized)."""
    return {"input": INPUT_LAYOUT, "frames": frames, "size": size, "classes": classes, "config": cfg_dict,
            "output": "logits (N, num_classes); softmax for scores"}  # fmt: skip


def drop_misshapen_zero_biases(graph: Any) -> int:
    """Remove the bias input of each ``Conv`` whose bias is a zero ``Expand``-ed to ``(O, 2)``:
    onnxscript 0.6-0.7 translate a bias-less ``conv1d``/``conv3d`` so (the shape of its complex
    variant), which onnxruntime rejects ("bias must be a 1D tensor"); a ``Conv`` without bias is the
    same function. ``graph``: an ONNX ``GraphProto``, changed in place. Returns how many were removed."""
    made = {out: node for node in graph.node for out in node.output}
    dropped = 0
    for node in graph.node:
        if node.op_type != "Conv" or len(node.input) != 3:
            continue
        expand = made.get(node.input[2])
        shape = made.get(expand.input[1]) if expand is not None and expand.op_type == "Expand" else None
        if shape is None or shape.op_type != "Concat" or len(shape.input) != 2:
            continue
        two = made.get(shape.input[1])
        if two is not None and two.op_type == "Constant" and list(two.attribute[0].ints) == [2]:
            del node.input[2]
            dropped += 1
    return dropped


def _export_onnx(recognizer: nn.Module, example: torch.Tensor, out: Path, meta: dict, optimize: bool) -> None:
    import onnx

    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.onnx.export(
        recognizer, (example,), dynamo=True, opset_version=OPSET, input_names=["clips"], output_names=["logits"],
        dynamic_shapes={"clips": {0: batch}}, optimize=optimize, verbose=False,
    )  # fmt: skip
    proto = program.model_proto
    drop_misshapen_zero_biases(proto.graph)
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(meta)
    names = proto.metadata_props.add()
    names.key, names.value = "classes", json.dumps(meta["classes"])
    onnx.save(proto, str(out))


def _export_pt2(recognizer: nn.Module, example: torch.Tensor, out: Path, meta: dict) -> None:
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(recognizer, (example,), dynamic_shapes={"clips": {0: batch}})
    torch.export.save(program, str(out), extra_files={f"{META_KEY}.json": json.dumps(meta)})


def export_checkpoint(
    checkpoint: str | Path, out: str | Path, format: str = "onnx", frames: int | None = None,
    size: int | None = None, overrides: list[str] | None = None, optimize: bool = True,
) -> tuple[ExportedModel, ClipRecognizer]:  # fmt: skip
    """Build the checkpoint's model (as ``seqctx test`` does), wrap it (:class:`ClipRecognizer`)
    and export it to ``out``. ``frames``: default ``model.num_segments``; ``size``: default
    ``data.size`` (the size it was trained at; GE-theta's gather needs it). ``optimize``: run
    onnxscript's graph optimiser on the ONNX file (constant folding: a smaller graph; most of the
    export's time)."""
    from seqctx.video.engine.evaluate import load_trained_model

    if format not in EXPORT_FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(EXPORT_FORMATS)}; got {format!r}")
    if not Path(checkpoint).is_file():
        raise UserError(f"no checkpoint at {checkpoint} (a latest.pt or best.pt of `seqctx train`)")
    for flag, value in (("--frames", frames), ("--size", size)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be a positive number; got {value}")
    cfg, model, classes = load_trained_model(None, checkpoint, overrides or [])
    frames = frames or cfg.model.num_segments
    size = size or cfg.data.size
    recognizer = ClipRecognizer(model.cpu().float()).eval()
    example = example_clips(2, frames, size)
    with torch.no_grad():
        try:
            recognizer(example)
        except (RuntimeError, ValueError) as e:
            raise UserError(f"the model of {checkpoint} does not take {frames} frames of {size}x{size}: {e}") from None
    from seqctx.outputs import output_file

    out = output_file(out, "--out")
    meta = metadata(cfg.to_dict(), list(classes), frames, size)
    with torch.no_grad():
        if format == "onnx":
            _export_onnx(recognizer, example, out, meta, optimize)
        else:
            _export_pt2(recognizer, example, out, meta)
    return ExportedModel(out, format, frames, size, list(classes)), recognizer


def run_exported(path: str | Path, format: str, clips: torch.Tensor) -> torch.Tensor:
    """The exported file's logits for uint8 ``clips (N, T, H, W, 3)``: onnxruntime (CPU) for ONNX,
    ``torch.export.load`` for ``.pt2``."""
    if format == "onnx":
        from .runtime import OnnxRecognizer

        return torch.from_numpy(OnnxRecognizer(path).logits(clips.numpy()))
    program = torch.export.load(str(path))
    with torch.no_grad():
        return program.module()(clips)


def verify_export(
    exported: ExportedModel, recognizer: ClipRecognizer, batches: tuple[int, ...] = (1, 2, 3),
    clips: torch.Tensor | None = None,
) -> ExportedModel:  # fmt: skip
    """Run the file on random clips (or ``clips``) at each batch size and record the largest
    difference from the PyTorch model's logits."""
    for batch in batches if clips is None else (len(clips),):
        x = example_clips(batch, exported.frames, exported.size, seed=batch) if clips is None else clips
        with torch.no_grad():
            expected = recognizer(x)
        got = run_exported(exported.path, exported.format, x)
        exported.max_abs_diff[batch] = float((got - expected).abs().max())
    return exported
