"""The layer builder that backbones are parameterised by: which convolution (plain or CGC), which
normaliser, and which context operator goes where. Blocks ask it for layers; they never decide."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import nn

from seqctx.modules import ContextGatedConv2d, ContextGatedConv3d, TemporalShift, create_context

Triple = tuple[int, int, int]

# Which convolutions become context-gated: by the shape of their kernel (t, h, w).
#   "all":      every kernel with more than one position (2D models, I3D)
#   "temporal": t > 1 and h = w = 1 (P3D's 3x1x1 / 5x1x1: CGC-1D)
#   "spatial":  t = 1 and h * w > 1 (P3D's 1x3x3 / 1x7x7: CGC-3D with a k x k x k context cube)
CGC_KINDS = ("all", "temporal", "spatial")


def kernel_kind(kernel: Triple) -> str:
    t, h, w = kernel
    if t * h * w == 1:
        return "pointwise"
    if h * w == 1:
        return "temporal"
    return "spatial" if t == 1 else "spatiotemporal"


@dataclass(frozen=True)
class LayerBuilder:
    """Makes the layers of a ResNet trunk.

    Args:
        dims: 2 (frame models: kernels must have ``t = 1``) or 3.
        cgc: the kinds of kernels (see ``CGC_KINDS``) to build as CGC layers.
        num_segments: frames per video of a 2D frame model: CGC layers then pool a per-video
            spatio-temporal context; with ``temporal_shift`` the blocks get TSM's shift.
        temporal_shift: put ``TemporalShift(num_segments)`` on every residual branch (TSM).
        online_shift: make that shift the uni-directional one of online TSM (from frame t-1 only).
        pre_conv: context operator placed before convolutions (``"gct"``) or None.
        pre_conv_last: place it before only the last ``pre_conv_last`` convolutions of each
            residual block (0 = before every convolution, stem and shortcuts included).
        branch: context operator on the residual branch after its last normaliser (SE, GE, CE).
        branch_blocks: only the first ``branch_blocks`` residual blocks (in network order) get
            the branch operator (the CE paper's placement, see ``ce_blocks``); None: every block.
        context_kwargs: extra constructor arguments of the context operators.
    """

    dims: int = 2
    cgc: frozenset[str] = frozenset()
    num_segments: int | None = None
    temporal_shift: bool = False
    online_shift: bool = False
    pre_conv: str | None = None
    pre_conv_last: int = 0
    branch: str | None = None
    branch_blocks: int | None = None
    context_kwargs: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dims not in (2, 3) or not self.cgc <= set(CGC_KINDS):
            raise ValueError(
                f"LayerBuilder needs dims 2 or 3 and cgc kinds from {CGC_KINDS}, got {self.dims}, {set(self.cgc)}"
            )

    def conv(
        self,
        in_channels: int,
        out_channels: int,
        kernel: Triple,
        stride: Triple = (1, 1, 1),
        padding: Triple | None = None,
    ) -> nn.Module:
        """A convolution with kernel/stride/padding given as ``(t, h, w)``; ``padding`` defaults to
        half the kernel."""
        if padding is None:
            padding = tuple(k // 2 for k in kernel)  # type: ignore[assignment]
        kind = kernel_kind(kernel)
        gated = kind != "pointwise" and ("all" in self.cgc or kind in self.cgc)
        if self.dims == 2:
            if kernel[0] != 1 or stride[0] != 1:
                raise ValueError(f"a 2D trunk cannot build a temporal kernel {kernel} / stride {stride}")
            args = (in_channels, out_channels, kernel[1:], stride[1:], padding[1:])
            if gated:
                return ContextGatedConv2d(*args, bias=False, num_segments=self.num_segments)
            return nn.Conv2d(*args, bias=False)
        args3 = (in_channels, out_channels, kernel, stride, padding)
        if gated:
            # spatial convs of (2+1)D models get the k x k x k cube of CGC-3D; others their kernel
            context = (max(kernel),) * 3 if kind == "spatial" else None
            return ContextGatedConv3d(*args3, bias=False, context_size=context)
        return nn.Conv3d(*args3, bias=False)

    def norm(self, channels: int) -> nn.Module:
        return nn.BatchNorm2d(channels) if self.dims == 2 else nn.BatchNorm3d(channels)

    def pool(self, kernel: Triple, stride: Triple, padding: Triple) -> nn.Module:
        if self.dims == 2:
            return nn.MaxPool2d(kernel[1:], stride[1:], padding[1:])
        return nn.MaxPool3d(kernel, stride, padding)

    def shift(self) -> nn.Module:
        if self.temporal_shift and self.num_segments is not None:
            return TemporalShift(self.num_segments, online=self.online_shift)
        return nn.Identity()

    def before(self, slot: str, channels: int, block: Sequence[str] = ()) -> nn.Module:
        """The operator before the convolution named ``slot``: ``"stem"``/``"stem_t"`` (the
        trunk's), ``"shortcut"`` (a block's projection), or one of ``block``, the names of a
        residual block's convolutions in order (``("conv1", "conv2", "conv3")``). With
        ``pre_conv_last = n`` only the last ``n`` of ``block`` get it (the stem and shortcuts not);
        with 0, every convolution does."""
        if self.pre_conv is None:
            return nn.Identity()
        if self.pre_conv_last and slot not in block[-self.pre_conv_last :]:
            return nn.Identity()
        return create_context(self.pre_conv, channels, self.dims, **self.context_kwargs)

    def on_branch(self, channels: int, feat_size: Sequence[int]) -> nn.Module:
        """The operator at the end of a residual branch; ``feat_size`` is its map's size."""
        if self.branch is None:
            return nn.Identity()
        kwargs = dict(self.context_kwargs)
        if self.branch.startswith("ge_theta") and "extent" not in kwargs:
            kwargs.setdefault("feat_size", tuple(feat_size))
        return create_context(self.branch, channels, self.dims, **kwargs)
