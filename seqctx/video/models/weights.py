"""Loading ImageNet weights (a torchvision ResNet ``state_dict`` file) into any backbone, inflating
2D kernels into 3D ones."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from seqctx.errors import CheckpointError

log = logging.getLogger(__name__)


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did, key by key (model key names)."""

    loaded: list[str] = field(default_factory=list)
    inflated: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # model keys the file did not provide
    unexpected: list[str] = field(default_factory=list)  # file keys the model has no place for
    mismatched: list[str] = field(default_factory=list)  # same name, incompatible shape

    def __str__(self) -> str:
        def short(keys: list[str]) -> str:
            return ", ".join(keys[:6]) + (f", ... (+{len(keys) - 6})" if len(keys) > 6 else "")

        return (
            f"loaded {len(self.loaded)} tensors ({len(self.inflated)} inflated to 3D); "
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


def load_pretrained(model: nn.Module, path: str | Path) -> LoadReport:
    """Load a torchvision ResNet checkpoint into a model built by ``build_model``.

    torchvision names map to ``trunk.*`` and ``fc.*`` to ``head.fc.*``; 4-D kernels are inflated
    where the model's are 5-D. Context operators and P3D's temporal convolutions keep their own
    initialisation; a head of a different size is left alone. The report is logged (INFO, which
    the ``seqctx`` command shows) and returned; loading fewer than half of the model's tensors is
    logged as a WARNING: the file is probably not the model's ImageNet ResNet.
    """
    state = read_state_dict(path)
    target = model.state_dict()
    report = LoadReport()
    to_load: dict[str, Tensor] = {}
    for key, value in state.items():
        name = f"head.{key}" if key.startswith("fc.") else f"trunk.{key}"
        if name not in target:
            report.unexpected.append(key)
            continue
        want = target[name]
        if value.shape == want.shape:
            to_load[name] = value
        elif value.dim() == 4 and want.dim() == 5 and value.shape == want.shape[:2] + want.shape[3:]:
            to_load[name] = inflate_kernel(value, want.shape[2])
            report.inflated.append(name)
        else:
            report.mismatched.append(f"{name} {tuple(value.shape)} -> {tuple(want.shape)}")
            continue
        report.loaded.append(name)
    report.missing = [k for k in target if k not in to_load]
    model.load_state_dict(to_load, strict=False)
    log.info("pretrained weights %s: %s", path, report)
    counted = [k for k in target if not k.endswith("num_batches_tracked")]  # BN counters fit any model
    filled = [k for k in report.loaded if not k.endswith("num_batches_tracked")]
    if len(filled) < len(counted) / 2:
        log.warning(
            "pretrained weights %s filled only %d of the model's %d weight tensors: is it a torchvision ResNet of "
            "the same depth and width?", path, len(filled), len(counted),
        )  # fmt: skip
    return report
