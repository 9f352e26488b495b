"""``build_model(name, num_classes, ...)`` and ``list_models()``: every backbone by name."""

from __future__ import annotations

from collections.abc import Callable
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
SHIFTS = ("offline", "online")
# contexts that pool over a clip's frames (later ones too): not for models that see one frame at a time
CLIP_CONTEXTS = ("cgc",)


def plain_spec(depth: int, width: int = 64) -> TrunkSpec:
    """torchvision's ResNet: ``7x7`` stem, ``3x3`` max-pool, four stages."""
    return TrunkSpec(depth=depth, width=width)


@dataclass(frozen=True)
class Family:
    """A model family, registered once: every other place asks it.

    Args:
        name: the model names' prefix (``resnet50``, ``tsm_r50``, ...).
        dims: 2 (a 2D trunk over frames, logits averaged over them) or 3 (a 3D trunk over clips).
        depths: the ResNet depths it is defined for.
        contexts: the ``context=`` values it takes (see :data:`CONTEXT_FIELDS`).
        spec: ``(depth, width) -> TrunkSpec``, the trunk's shape.
        segments: frames of a video go through the trunk as one group (TSN/TSM): CGC pools a
            per-video context and the model is built for ``num_segments`` frames.
        temporal_shift: TSM's shift on every residual branch.
    """

    name: str
    dims: int
    depths: tuple[int, ...]
    contexts: tuple[str, ...]
    spec: Callable[[int, int], TrunkSpec]
    segments: bool = False
    temporal_shift: bool = False

    def model_name(self, depth: int) -> str:
        return f"resnet{depth}" if self.name == "resnet" else f"{self.name}_r{depth}"


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("resnet", 2, (18, 34, 50, 101), ("gct", "cgc", *BRANCH_CONTEXTS), plain_spec),
        Family("tsn", 2, (18, 34, 50, 101), ("gct", "cgc", *BRANCH_CONTEXTS), plain_spec, segments=True),
        Family("tsm", 2, (18, 34, 50, 101), ("gct", "cgc", *BRANCH_CONTEXTS), plain_spec, segments=True,
               temporal_shift=True),
        Family("p3d", 3, (50, 101), ("gct", "gct_all", "cgc1d", "cgc3d", "cgc1d3d", *BRANCH_CONTEXTS), p3d_spec),
        Family("i3d", 3, (50, 101), ("gct", "gct_all", "cgc", *BRANCH_CONTEXTS), i3d_spec),
    )
}  # fmt: skip


@dataclass(frozen=True)
class ModelInfo:
    name: str
    family: Family
    depth: int

    @property
    def contexts(self) -> tuple[str, ...]:
        return self.family.contexts


MODELS: dict[str, ModelInfo] = {
    f.model_name(d): ModelInfo(f.model_name(d), f, d) for f in FAMILIES.values() for d in f.depths
}


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


# What each context asks of the layer builder, given the family and the depth.
CONTEXT_FIELDS: dict[str, Callable[[Family, int], dict[str, object]]] = {
    # GCT paper: before every conv on ImageNet, before the last two of each block on Kinetics
    "gct": lambda f, d: {"pre_conv": "gct", "pre_conv_last": 2 if f.dims == 3 else 0},
    "gct_all": lambda f, d: {"pre_conv": "gct"},
    "cgc": lambda f, d: {"cgc": frozenset({"all"})},
    "cgc1d": lambda f, d: {"cgc": frozenset({"temporal"})},
    "cgc3d": lambda f, d: {"cgc": frozenset({"spatial"})},
    "cgc1d3d": lambda f, d: {"cgc": frozenset({"temporal", "spatial"})},
    "ce": lambda f, d: {"branch": "ce", "branch_blocks": ce_blocks(d)},
    "ce_all": lambda f, d: {"branch": "ce"},
    **{name: (lambda f, d, name=name: {"branch": name}) for name in ("se", "ge", "ge_theta", "ge_theta_plus")},
}


def _layer_builder(
    info: ModelInfo, context: str | None, num_segments: int, kwargs: dict[str, object], online: bool
) -> LayerBuilder:
    family = info.family
    fields: dict[str, object] = {"dims": family.dims, "context_kwargs": kwargs}
    if family.segments:
        fields["num_segments"] = num_segments
        fields["temporal_shift"] = family.temporal_shift
        fields["online_shift"] = online
    if context is not None:
        fields.update(CONTEXT_FIELDS[context](family, info.depth))
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
    shift: str = "offline",
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
        shift: TSM's ``"offline"`` bi-directional shift, or the ``"online"`` uni-directional one
            (from frame t-1 only: a model for streams, :mod:`seqctx.video.online`); TSM models
            only, and not with a context that pools over the clip's frames (CGC's video context).
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
    if shift not in SHIFTS:
        raise ValueError(f"shift must be one of {', '.join(SHIFTS)}, got {shift!r}")
    online = shift == "online"
    if online and not info.family.temporal_shift:
        raise ValueError(f"shift='online' is TSM's uni-directional shift; {name} has no shift (use a tsm_* model)")
    if online and context in CLIP_CONTEXTS:
        online_contexts = ", ".join(c for c in info.contexts if c not in CLIP_CONTEXTS)
        raise ValueError(
            f"context {context!r} pools its gate's context over the clip's frames, later ones too, so an online "
            f"model (one frame at a time) cannot use it; online TSM takes {online_contexts} or None"
        )
    builder = _layer_builder(info, context, num_segments, dict(context_kwargs or {}), online)
    spec = replace(info.family.spec(info.depth, width), stride_in_1x1=stride_in_1x1)
    frames = num_segments if (info.family.segments or info.family.dims == 3) else 1
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
