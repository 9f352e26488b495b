"""Loading published weights into any backbone: torchvision ImageNet ResNets and the official TSM,
GCT and CGC checkpoints (layouts in :mod:`.formats`), inflating 2D kernels into 3D ones."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from seqctx.errors import CheckpointError

from .formats import detect_format, our_key

log = logging.getLogger(__name__)


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did, key by key (model key names)."""

    layout: str | None = None  # a published checkpoint's key layout (see .formats)
    loaded: list[str] = field(default_factory=list)
    inflated: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # model keys the file did not provide
    unexpected: list[str] = field(default_factory=list)  # file keys the model has no place for
    mismatched: list[str] = field(default_factory=list)  # same name, incompatible shape

    def __str__(self) -> str:
        def short(keys: list[str]) -> str:
            return ", ".join(keys[:6]) + (f", ... (+{len(keys) - 6})" if len(keys) > 6 else "")

        layout = f"{self.layout} layout: " if self.layout else ""
        return (
            f"{layout}loaded {len(self.loaded)} tensors ({len(self.inflated)} inflated to 3D); "
            f"missing {len(self.missing)}: [{short(self.missing)}]; "
            f"unexpected {len(self.unexpected)}: [{short(self.unexpected)}]; "
            f"shape-mismatched {len(self.mismatched)}: [{short(self.mismatched)}]"
        )


def inflate_kernel(weight: Tensor, time: int) -> Tensor:
    """``(O, I, H, W) -> (O, I, time, H, W)``: repeat over time and divide by ``time`` (I3D), so a
    clip of identical frames gives the 2D network's response; ``time = 1`` copies (P3D)."""
    return weight.unsqueeze(2).repeat(1, 1, time, 1, 1) / time


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A state dict from a file saved by ``torch.save`` (plain, or under ``state_dict``/``model``),
    loaded with ``weights_only=True``."""
    if not Path(path).is_file():
        raise CheckpointError(
            f"pretrained weights {path} not found (model.pretrained; see the README for ImageNet weights)"
        )
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict, found {type(obj).__name__}")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _fit(value: Tensor, want: Tensor) -> tuple[Tensor | None, bool]:
    """``value`` shaped as ``want`` if the layouts allow (same shape; a 2D kernel inflated over
    time; GCT's ``(1, C, 1, 1)`` parameters as ``(C,)``), and whether it was inflated."""
    if value.shape == want.shape:
        return value, False
    if value.dim() == 4 and want.dim() == 5 and value.shape == want.shape[:2] + want.shape[3:]:
        return inflate_kernel(value, want.shape[2]), True
    if want.dim() == 1 and value.dim() == 4 and value.shape == (1, want.shape[0], 1, 1):
        return value.reshape(want.shape), False
    return None, False


def load_pretrained(model: nn.Module, path: str | Path) -> LoadReport:
    """Load published weights into a model built by ``build_model``.

    The file's layout is recognised by its keys (:func:`~.formats.detect_format`): a torchvision
    ResNet, or the official TSN/TSM, GCT or CGC release, whose names are mapped to ours
    (:func:`~.formats.our_key`). 4-D kernels are inflated where the model's are 5-D. What the
    file does not hold (context operators absent from it, P3D's temporal convolutions) keeps its
    own initialisation. A classifier of another class count is left at its initialisation, with a
    warning; any other tensor whose shape does not fit raises a :class:`CheckpointError`. The
    report (mapped, missing and unexpected keys) is logged (INFO, which the ``seqctx`` command
    shows) and returned; filling fewer than half of the model's tensors is a WARNING: the file is
    probably not for this model's depth and width.
    """
    state = read_state_dict(path)
    target = model.state_dict()
    report = LoadReport(layout=detect_format(state))
    to_load: dict[str, Tensor] = {}
    for key, value in state.items():
        name = our_key(key, report.layout)
        if name not in target:
            report.unexpected.append(key)
            continue
        fitted, inflated = _fit(value, target[name])
        if fitted is None:
            report.mismatched.append(f"{name} {tuple(value.shape)} -> {tuple(target[name].shape)}")
            continue
        to_load[name] = fitted
        report.loaded.append(name)
        if inflated:
            report.inflated.append(name)
    wrong = [m for m in report.mismatched if not m.startswith("head.fc.")]
    if wrong:
        raise CheckpointError(
            f"pretrained weights {path} ({report.layout} layout) do not fit the model: {len(wrong)} tensors have "
            f"other shapes: {'; '.join(wrong[:4])}{' ...' if len(wrong) > 4 else ''}"
        )
    report.missing = [k for k in target if k not in to_load]
    model.load_state_dict(to_load, strict=False)
    log.info("pretrained weights %s: %s", path, report)
    if report.mismatched:
        log.warning(
            "pretrained weights %s: the classifier has another class count (%s); it keeps its initialisation",
            path, "; ".join(report.mismatched),
        )  # fmt: skip
    counted = [k for k in target if not k.endswith("num_batches_tracked")]  # BN counters fit any model
    filled = [k for k in report.loaded if not k.endswith("num_batches_tracked")]
    if len(filled) < len(counted) / 2:
        log.warning(
            "pretrained weights %s filled only %d of the model's %d weight tensors: is it a ResNet of the same depth "
            "and width?", path, len(filled), len(counted),
        )  # fmt: skip
    return report
