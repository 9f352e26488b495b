"""I3D ResNet: the inflated 3D baseline of the Non-local Networks paper (Wang et al., CVPR 2018)."""

from __future__ import annotations

from .resnet import TrunkSpec

# Blocks whose first 1x1 conv is inflated to 3x1x1 (every other block of res4 in R101).
I3D_INFLATED_BLOCKS: dict[int, tuple[tuple[int, ...], ...]] = {
    50: ((1, 1, 1), (1, 0, 1, 0), (1, 0, 1, 0, 1, 0), (0, 1, 0)),
    101: ((1, 1, 1), (1, 0, 1, 0), tuple(1 - i % 2 for i in range(23)), (0, 1, 0)),
}


def i3d_spec(depth: int = 50, width: int = 64) -> TrunkSpec:
    """``5x7x7`` stem conv (stride 1x2x2), ``3x3x3`` max-pool with temporal stride 2, ``3x1x1``
    kernels on the first conv of the marked blocks, and a ``3x1x1`` temporal max-pool (stride 2)
    after res2 (``layer1``): 32 input frames become 8 in res3-res5."""
    if depth not in I3D_INFLATED_BLOCKS:
        raise ValueError(f"I3D is defined for depths {sorted(I3D_INFLATED_BLOCKS)}, got {depth}")
    return TrunkSpec(
        depth=depth,
        width=width,
        stem_kernel=(5, 7, 7),
        stem_stride=(1, 2, 2),
        pool1_kernel=(3, 3, 3),
        pool1_stride=(2, 2, 2),
        pool2=True,
        temporal_conv1=I3D_INFLATED_BLOCKS[depth],
    )
