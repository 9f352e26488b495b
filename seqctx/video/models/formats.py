"""The key layouts of published checkpoints, and their keys in the names of :func:`build_model`'s
models (``trunk.*``, ``head.fc.*``). Keys arrive without DataParallel's ``module.`` prefix.

- ``torchvision``: ImageNet ResNets, ``conv1.weight``, ``layer1.0.conv1.weight``, ``fc.weight``.
- ``tsm``: the TSN/TSM releases of mit-han-lab/temporal-shift-module: the torchvision ResNet under
  ``base_model.`` (TSM wraps the first conv of each residual branch, ``conv1.net.weight``) and the
  classifier ``new_fc.*`` (``base_model.fc.*`` when trained without dropout).
- ``gct``: z-x-yang/GCT's PyTorch ResNet (maskrcnn-benchmark's layout): stem ``stem.conv1.{0,1}``
  and ``stem.bn1``, each convolution ``convK.0`` (its GCT; ``alpha``, ``gamma``, ``beta`` shaped
  ``(1, C, 1, 1)``) and ``convK.1`` (the conv), the shortcut ``downsample.{0,1,2}`` (GCT, conv,
  BN), ``fc.*``; the stride sits on the first 1x1 conv (build with ``stride_in_1x1=True``).
- ``cgc``: XudongLinthu/context-gated-convolution's ResNet: torchvision names, and each gated
  conv's gate as ``ce`` (context encoding), ``ce_bn``, ``ci_bn2``, ``ci`` (channel interacting),
  ``ci_bn``, ``gd`` and ``gd2`` (gate decoding).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["FORMATS", "detect_format", "our_key"]

FORMATS = ("torchvision", "tsm", "gct", "cgc")

# The official CGC layer's gate modules -> ContextGate's (seqctx.modules.cgc).
_CGC_GATE = {
    "ce": "encode",
    "ce_bn": "encode_norm",
    "ci_bn2": "interact_in_norm",
    "ci": "interact",
    "ci_bn": "interact_norm",
    "gd": "decode_in",
    "gd2": "decode_out",
}
_CGC_KEY = re.compile(rf"^(.+)\.({'|'.join(_CGC_GATE)})\.(weight|bias|running_mean|running_var|num_batches_tracked)$")
_GCT_RULES = [  # (pattern, replacement) in order; the first that matches renames the key
    (re.compile(r"^stem\.conv1\.0\.(.+)$"), r"trunk.ctx1.\1"),
    (re.compile(r"^stem\.conv1\.1\.(.+)$"), r"trunk.conv1.\1"),
    (re.compile(r"^stem\.(.+)$"), r"trunk.\1"),
    (re.compile(r"^(layer\d+\.\d+)\.conv(\d)\.0\.(.+)$"), r"trunk.\1.ctx\2.\3"),
    (re.compile(r"^(layer\d+\.\d+)\.conv(\d)\.1\.(.+)$"), r"trunk.\1.conv\2.\3"),
    (re.compile(r"^(layer\d+\.\d+)\.downsample\.0\.(.+)$"), r"trunk.\1.downsample.ctx.\2"),
    (re.compile(r"^(layer\d+\.\d+)\.downsample\.1\.(.+)$"), r"trunk.\1.downsample.0.\2"),
    (re.compile(r"^(layer\d+\.\d+)\.downsample\.2\.(.+)$"), r"trunk.\1.downsample.1.\2"),
]


def detect_format(keys: Iterable[str]) -> str:
    """The layout of a state dict, judged by its keys: ``tsm`` (``base_model.*``), ``gct``
    (``stem.*``), ``cgc`` (gate decoding ``*.gd2.weight``), else ``torchvision``."""
    keys = list(keys)
    if any(k.startswith("base_model.") for k in keys):
        return "tsm"
    if any(k.startswith("stem.") for k in keys):
        return "gct"
    if any(k.endswith(".gd2.weight") for k in keys):
        return "cgc"
    return "torchvision"


def our_key(key: str, fmt: str) -> str:
    """The name of checkpoint key ``key`` (layout ``fmt``) in a :func:`build_model` model."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown checkpoint layout {fmt!r}; known: {', '.join(FORMATS)}")
    if fmt == "tsm":
        if key.startswith("new_fc."):
            return "head.fc." + key.removeprefix("new_fc.")
        key = key.removeprefix("base_model.").replace(".conv1.net.", ".conv1.")
    if key.startswith("fc."):
        return "head." + key
    if fmt == "gct":
        for pattern, replacement in _GCT_RULES:
            if pattern.match(key):
                return pattern.sub(replacement, key)
    if fmt == "cgc" and (m := _CGC_KEY.match(key)):
        return f"trunk.{m[1]}.context_gate.{_CGC_GATE[m[2]]}.{m[3]}"
    return "trunk." + key
