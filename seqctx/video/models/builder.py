"""``build_model(name, num_classes, ...)`` and ``list_models()``: every backbone by name."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from torch import nn

from .clip_model import ClipModel
from .frame_model import FrameModel
from .heads import ClassificationHead
from .i3d import i3d_spec
from .layers import LayerBuilder
from .p3d import p3d_spec
from .resnet import DEPTHS, ResNetTrunk, TrunkSpec
from .weights import load_pretrained

BRANCH_CONTEXTS = ("se", "ge", "ge_theta", "ge_theta_plus", "ce", "ce_all")
FAMILY_CONTEXTS: dict[str, tuple[str, ...]] = {
    "resnet": ("gct", "cgc", *BRANCH_CONTEXTS),
    "tsn": ("gct", "cgc", *BRANCH_CONTEXTS),
    "tsm": ("gct", "cgc", *BRANCH_CONTEXTS),
    "p3d": ("gct", "gct_all", "cgc1d", "cgc3d", "cgc1d3d", *BRANCH_CONTEXTS),
    "i3d": ("gct", "gct_all", "cgc", *BRANCH_CONTEXTS),
}
FAMILY_DEPTHS = {"resnet": (18, 34, 50, 101), "tsn": (18, 34, 50, 101), "tsm": (18, 34, 50, 101),
                 "p3d": (50, 101), "i3d": (50, 101)}  # fmt: skip


@dataclass(frozen=True)
class ModelInfo:
    name: str
    family: str
    depth: int
    contexts: tuple[str, ...]


def _registry() -> dict[str, ModelInfo]:
    out = {}
    for family, depths in FAMILY_DEPTHS.items():
        for depth in depths:
            name = f"resnet{depth}" if family == "resnet" else f"{family}_r{depth}"
            out[name] = ModelInfo(name, family, depth, FAMILY_CONTEXTS[family])
    return out


MODELS: dict[str, ModelInfo] = _registry()


def list_models() -> list[str]:
    """Names :func:`build_model` accepts."""
    return list(MODELS)


def ce_blocks(depth: int) -> int | None:
    """How many leading residual blocks get CE (CE paper, sec. 4.1): "for ResNet18, we plug the
    CE block into each residual block. For ResNet50, CE is inserted into all residual blocks
    except for those layers with 2048 channels. For ResNet101, the CE blocks are employed in the
    first seven residual blocks." ResNet-34, which the paper does not use, gets it in every block
    as ResNet-18. None: every block."""
    kind, layers = DEPTHS[depth]
    if kind == "basic":
        return None
    return 7 if depth == 101 else sum(layers[:3])


def _layer_builder(info: ModelInfo, context: str | None, num_segments: int, kwargs: dict[str, object]) -> LayerBuilder:
    dims = 3 if info.family in ("p3d", "i3d") else 2
    fields: dict[str, object] = {"dims": dims, "context_kwargs": kwargs}
    if info.family in ("tsn", "tsm"):
        fields["num_segments"] = num_segments
        fields["temporal_shift"] = info.family == "tsm"
    if context in ("gct", "gct_all"):
        fields["pre_conv"] = "gct"
        # GCT paper: before every conv on ImageNet, before the last two of each block on Kinetics
        fields["pre_conv_last"] = 2 if (dims == 3 and context == "gct") else 0
    elif context == "cgc":
        fields["cgc"] = frozenset({"all"})
    elif context in ("cgc1d", "cgc3d", "cgc1d3d"):
        kinds = {"cgc1d": {"temporal"}, "cgc3d": {"spatial"}, "cgc1d3d": {"temporal", "spatial"}}[context]
        fields["cgc"] = frozenset(kinds)
    elif context == "ce":
        fields["branch"], fields["branch_blocks"] = "ce", ce_blocks(info.depth)
    elif context == "ce_all":
        fields["branch"] = "ce"
    elif context is not None:
        fields["branch"] = context
    return LayerBuilder(**fields)  # type: ignore[arg-type]


def build_model(
    name: str,
    num_classes: int,
    *,
    num_segments: int = 8,
    context: str | None = None,
    dropout: float = 0.5,
    pretrained: str | Path | None = None,
    width: int = 64,
    input_size: int = 224,
    context_kwargs: dict[str, object] | None = None,
    stride_in_1x1: bool = False,
) -> nn.Module:
    """Build a backbone with a classification head; every model maps ``(N, 3, T, H, W)`` float clips
    to ``(N, num_classes)`` logits (image ``resnet*`` models also take ``(N, 3, H, W)``).

    Args:
        name: one of :func:`list_models`: ``resnet{18,34,50,101}``, ``tsn_r*``, ``tsm_r*``,
            ``p3d_r{50,101}``, ``i3d_r{50,101}``.
        num_classes: size of the head.
        num_segments: frames per clip, ``T`` (TSN/TSM segments; the clip length of 3D models,
            used for GE-theta's feature sizes).
        context: None or one of the model's contexts (``gct``, ``cgc``, ``se``, ``ge``,
            ``ge_theta``, ``ge_theta_plus``, ``ce``, ``ce_all``; 3D models also ``gct_all``; P3D
            ``cgc1d``, ``cgc3d``, ``cgc1d3d`` instead of ``cgc``). ``ce`` follows the CE paper's
            placement (:func:`ce_blocks`), ``ce_all`` puts CE in every block; ``gct`` (2D) and
            ``gct_all`` (3D) gate every convolution, the projection shortcuts' included.
        dropout: before the fc layer.
        pretrained: a weights file, loaded with ``weights_only=True``: a torchvision ResNet
            ``state_dict``, or an official TSN/TSM, GCT or CGC checkpoint (see
            :func:`~.weights.load_pretrained`), inflated for 3D models.
        width: stem channels (64 in the papers); smaller values make quick test models.
        input_size: the frames' side, used for GE-theta's global depthwise kernels.
        context_kwargs: extra arguments for the context operators (e.g. ``{"reduction": 8}``).
        stride_in_1x1: put a stage's stride on the bottleneck's first 1x1 conv (the original
            ResNet, the official GCT ResNet and its checkpoints) instead of the 3x3 (torchvision).
    """
    info = MODELS.get(name)
    if info is None:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}")
    if context is not None and context not in info.contexts:
        raise ValueError(
            f"context {context!r} is not available for {name}; valid choices: None, {', '.join(info.contexts)}"
        )
    if num_segments < 1 or width < 1 or input_size < 1:
        raise ValueError(f"num_segments, width and input_size must be >= 1, got {num_segments}, {width}, {input_size}")
    builder = _layer_builder(info, context, num_segments, dict(context_kwargs or {}))
    if info.family == "p3d":
        spec = p3d_spec(info.depth, width)
    elif info.family == "i3d":
        spec = i3d_spec(info.depth, width)
    else:
        spec = TrunkSpec(depth=info.depth, width=width)
    spec = replace(spec, stride_in_1x1=stride_in_1x1)
    frames = 1 if info.family == "resnet" else num_segments
    trunk = ResNetTrunk(spec, builder, (frames, input_size, input_size))
    head = ClassificationHead(trunk.out_channels, num_classes, dropout)
    if builder.dims == 3:
        model: nn.Module = ClipModel(trunk, head)
    else:
        fixed_t = builder.num_segments if (builder.temporal_shift or builder.cgc) else None
        model = FrameModel(trunk, head, fixed_t)
    if pretrained is not None:
        load_pretrained(model, pretrained)
    return model
