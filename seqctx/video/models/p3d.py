"""P3D-A ResNet as the CGC paper's appendix A.2 builds it (after Qiu et al., ICCV 2017)."""

from __future__ import annotations

from .resnet import TrunkSpec

# Blocks that get a 3x1x1 temporal conv after their 1x3x3 conv ("after every two 1x3x3 convs").
P3D_TEMPORAL_BLOCKS: dict[int, tuple[tuple[int, ...], ...]] = {
    50: ((1, 0, 1), (1, 0, 1, 0), (1, 0, 1, 0, 1, 0), (0, 1, 0)),
    101: ((1, 0, 1), (1, 0, 1, 0), tuple(1 - i % 2 for i in range(23)), (0, 1, 0)),
}


def p3d_spec(depth: int = 50, width: int = 64) -> TrunkSpec:
    """ResNet with ``1x3x3`` spatial convs; a ``5x1x1`` temporal conv (temporal stride 2) after the
    ``1x7x7`` stem conv; the stem max-pool inflated to ``3x3x3`` with temporal stride 2; a ``3x1x1``
    temporal conv (stride 1, BN+ReLU) after the ``1x3x3`` conv of the blocks marked in
    :data:`P3D_TEMPORAL_BLOCKS`; no other temporal pooling (32 frames -> 8 in ``layer1..4``)."""
    if depth not in P3D_TEMPORAL_BLOCKS:
        raise ValueError(f"P3D is defined for depths {sorted(P3D_TEMPORAL_BLOCKS)}, got {depth}")
    return TrunkSpec(
        depth=depth,
        width=width,
        stem_kernel=(1, 7, 7),
        stem_stride=(1, 2, 2),
        stem_temporal=5,
        pool1_kernel=(3, 3, 3),
        pool1_stride=(2, 2, 2),
        p3d=P3D_TEMPORAL_BLOCKS[depth],
    )
