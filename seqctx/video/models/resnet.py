"""ResNet trunks in 2D (per frame) and 3D (I3D, P3D), built from a :class:`LayerBuilder`.

Parameter names follow torchvision's ResNet (``conv1``, ``bn1``, ``layer1.0.conv2``, ...), so
ImageNet weights load into 2D trunks as they are and inflate into 3D ones by name.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from torch import Tensor, nn

from .layers import LayerBuilder, Triple

DEPTHS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
}


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (ResNet-18/34). ``temporal`` has no effect: the basic-block
    variants exist for the 2D frame models only."""

    expansion = 1

    def __init__(
        self, b: LayerBuilder, inplanes: int, planes: int, stride: int, feat_size: Sequence[int], temporal: int = 0
    ) -> None:
        super().__init__()
        self.shift = b.shift()
        convs = ("conv1", "conv2")
        self.ctx1 = b.before("conv1", inplanes, convs)
        self.conv1 = b.conv(inplanes, planes, (1, 3, 3), (1, stride, stride))
        self.bn1 = b.norm(planes)
        self.ctx2 = b.before("conv2", planes, convs)
        self.conv2 = b.conv(planes, planes, (1, 3, 3))
        self.bn2 = b.norm(planes)
        self.ctx_branch = b.on_branch(planes, feat_size)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(b, inplanes, planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(self.ctx1(self.shift(x)))))
        out = self.ctx_branch(self.bn2(self.conv2(self.ctx2(out))))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 bottleneck: stride on the 3x3 (torchvision's ResNet v1.5, also TSM's and
    CGC's) or, with ``stride_in_1x1``, on the first 1x1 (the original ResNet and the official GCT
    ResNet, whose ImageNet checkpoints need it).

    3D variants: ``temporal_conv1 = k`` gives the first 1x1 conv a ``k x 1 x 1`` kernel (I3D);
    ``p3d=True`` adds a ``3x1x1`` temporal conv with BN+ReLU after the ``1x3x3`` one (P3D-A).
    """

    expansion = 4

    def __init__(
        self,
        b: LayerBuilder,
        inplanes: int,
        planes: int,
        stride: int,
        feat_size: Sequence[int],
        temporal_conv1: int = 1,
        p3d: bool = False,
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__()
        width, out = planes, planes * self.expansion
        convs = ("conv1", "conv2", "conv2_t", "conv3") if p3d else ("conv1", "conv2", "conv3")
        s1, s2 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.shift = b.shift()
        self.ctx1 = b.before("conv1", inplanes, convs)
        self.conv1 = b.conv(inplanes, width, (temporal_conv1, 1, 1), (1, s1, s1))
        self.bn1 = b.norm(width)
        self.ctx2 = b.before("conv2", width, convs)
        self.conv2 = b.conv(width, width, (1, 3, 3), (1, s2, s2))
        self.bn2 = b.norm(width)
        self.conv2_t: nn.Module | None = None
        if p3d:
            self.ctx2_t = b.before("conv2_t", width, convs)
            self.conv2_t = b.conv(width, width, (3, 1, 1))
            self.bn2_t = b.norm(width)
        self.ctx3 = b.before("conv3", width, convs)
        self.conv3 = b.conv(width, out, (1, 1, 1))
        self.bn3 = b.norm(out)
        self.ctx_branch = b.on_branch(out, feat_size)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(b, inplanes, out, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(self.ctx1(self.shift(x)))))
        out = self.relu(self.bn2(self.conv2(self.ctx2(out))))
        if self.conv2_t is not None:
            out = self.relu(self.bn2_t(self.conv2_t(self.ctx2_t(out))))
        out = self.ctx_branch(self.bn3(self.conv3(self.ctx3(out))))
        return self.relu(out + identity)


class Projection(nn.Sequential):
    """The projection shortcut ``norm(conv(ctx(x)))``: a strided 1x1 conv (``[0]``) and its
    normaliser (``[1]``), torchvision's ``downsample.0``/``downsample.1``, and ``ctx``, the
    operator before the conv (GCT where it gates every convolution; else the identity)."""

    def __init__(self, conv: nn.Module, norm: nn.Module, ctx: nn.Module) -> None:
        super().__init__(conv, norm)
        self.ctx = ctx

    def forward(self, x: Tensor) -> Tensor:
        return self[1](self[0](self.ctx(x)))


def _downsample(b: LayerBuilder, inplanes: int, out: int, stride: int) -> Projection | None:
    if stride == 1 and inplanes == out:
        return None
    conv = b.conv(inplanes, out, (1, 1, 1), (1, stride, stride))
    return Projection(conv, b.norm(out), b.before("shortcut", inplanes))


@dataclass(frozen=True)
class TrunkSpec:
    """The shape of a ResNet trunk.

    Args:
        depth: 18, 34, 50 or 101.
        width: channels of the stem (64 in the papers; smaller for quick tests).
        stem_kernel / stem_stride: of ``conv1``, as ``(t, h, w)``.
        stem_temporal: ``k`` > 0 adds a ``k x 1 x 1`` conv with temporal stride 2 (+BN+ReLU)
            after the stem conv (P3D-A, CGC appendix A.2).
        pool1_kernel / pool1_stride: of the stem's max-pool.
        pool2: a ``3x1x1`` temporal max-pool with stride 2 after ``layer1`` (I3D).
        temporal_conv1: per stage, per block, the temporal kernel of the first conv (I3D: 3 or 1).
        p3d: per stage, per block, whether it gets P3D's extra temporal conv.
        stride_in_1x1: a stage's stride on the bottleneck's first 1x1 conv instead of its 3x3.
    """

    depth: int = 50
    width: int = 64
    stem_kernel: Triple = (1, 7, 7)
    stem_stride: Triple = (1, 2, 2)
    stem_temporal: int = 0
    pool1_kernel: Triple = (1, 3, 3)
    pool1_stride: Triple = (1, 2, 2)
    pool2: bool = False
    temporal_conv1: tuple[tuple[int, ...], ...] | None = None
    p3d: tuple[tuple[int, ...], ...] | None = None
    stride_in_1x1: bool = False


class ResNetTrunk(nn.Module):
    """A ResNet without its head: ``(B, 3, [T,] H, W) -> (B, C_out, [T',] H', W')``.

    ``input_size = (T, H, W)`` is only used to give GE-theta its feature-map sizes.
    """

    def __init__(self, spec: TrunkSpec, builder: LayerBuilder, input_size: Triple) -> None:
        super().__init__()
        if spec.depth not in DEPTHS:
            raise ValueError(f"ResNet depth must be one of {sorted(DEPTHS)}, got {spec.depth}")
        kind, layers = DEPTHS[spec.depth]
        block = Bottleneck if kind == "bottleneck" else BasicBlock
        if spec.stride_in_1x1 and block is not Bottleneck:
            raise ValueError(f"stride_in_1x1 applies to bottleneck ResNets (depth 50, 101), got depth {spec.depth}")
        b = builder
        w = spec.width
        t, h, _ = input_size

        def down(size: int, stride: int) -> int:
            return math.ceil(size / stride)

        self.ctx1 = b.before("stem", 3)
        self.conv1 = b.conv(3, w, spec.stem_kernel, spec.stem_stride, (spec.stem_kernel[0] // 2, 3, 3))
        self.bn1 = b.norm(w)
        self.relu = nn.ReLU(inplace=True)
        t, h = down(t, spec.stem_stride[0]), down(h, 2)
        self.conv1_t: nn.Module | None = None
        if spec.stem_temporal:
            self.ctx1_t = b.before("stem_t", w)
            self.conv1_t = b.conv(w, w, (spec.stem_temporal, 1, 1), (2, 1, 1))
            self.bn1_t = b.norm(w)
            t = down(t, 2)
        pad1 = tuple(k // 2 for k in spec.pool1_kernel)
        self.maxpool = b.pool(spec.pool1_kernel, spec.pool1_stride, pad1)  # type: ignore[arg-type]
        t, h = down(t, spec.pool1_stride[0]), down(h, 2)
        self.pool2 = b.pool((3, 1, 1), (2, 1, 1), (1, 0, 0)) if spec.pool2 else None

        inplanes, index = w, 0
        for i, n in enumerate(layers):
            planes, stride = w * 2**i, (1 if i == 0 else 2)
            h = down(h, stride)
            if i == 1 and spec.pool2:
                t = down(t, 2)
            feat = (t, h, h) if b.dims == 3 else (h, h)
            blocks = []
            for j in range(n):
                extra: dict[str, object] = {}
                if spec.temporal_conv1 is not None:
                    extra["temporal_conv1"] = 3 if spec.temporal_conv1[i][j] else 1
                if spec.p3d is not None:
                    extra["p3d"] = bool(spec.p3d[i][j])
                if spec.stride_in_1x1:
                    extra["stride_in_1x1"] = True
                bb = b if b.branch_blocks is None or index < b.branch_blocks else replace(b, branch=None)
                blocks.append(block(bb, inplanes, planes, stride if j == 0 else 1, feat, **extra))
                inplanes, index = planes * block.expansion, index + 1
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.out_channels = inplanes
        _init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(self.ctx1(x))))
        if self.conv1_t is not None:
            x = self.relu(self.bn1_t(self.conv1_t(self.ctx1_t(x))))
        x = self.layer1(self.maxpool(x))
        if self.pool2 is not None:
            x = self.pool2(x)
        return self.layer4(self.layer3(self.layer2(x)))


def _init_weights(trunk: nn.Module) -> None:
    """He init (fan-out) for the trunk's convolutions, as torchvision; the added temporal
    ``k x 1 x 1`` convolutions of P3D (``conv1_t``, ``conv2_t``) start as the identity (centre tap
    1, the P3D paper's initialisation). Context operators (``ctx*``) keep their own init."""
    for name, m in trunk.named_modules():
        if any(part.startswith("ctx") for part in name.split(".")):
            continue
        if isinstance(m, nn.Conv2d | nn.Conv3d):
            if name.endswith("_t"):
                init_temporal_identity(m)
            else:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def init_temporal_identity(conv: nn.Conv3d) -> None:
    """``weight[o, i, centre] = [o == i]``, zeros elsewhere: the conv passes its input through."""
    nn.init.zeros_(conv.weight)
    centre = conv.kernel_size[0] // 2
    idx = range(conv.out_channels)
    conv.weight.data[idx, idx, centre, 0, 0] = 1.0
