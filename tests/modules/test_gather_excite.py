import pytest
import torch
import torch.nn.functional as F

from seqctx.modules import GatherExcite
from tests.conftest import spatial_shape


def reference_ge_minus(x, extent):
    """GE-theta-minus by explicit loops over output cells (average of the 2e-1 window)."""
    if extent == 0:
        g = x.mean(tuple(range(2, x.dim())), keepdim=True)
        return x * torch.sigmoid(g)
    size = x.shape[2:]
    out_size = [-(-s // extent) for s in size]
    gathered = torch.empty(*x.shape[:2], *out_size, dtype=x.dtype)
    for idx in torch.cartesian_prod(*[torch.arange(s) for s in out_size]).view(-1, len(size)):
        window = tuple(
            slice(max(0, int(i) * extent - (extent - 1)), min(s, int(i) * extent + extent))
            for i, s in zip(idx, size, strict=True)
        )
        gathered[(..., *idx.tolist())] = x[(..., *window)].mean(tuple(range(2, x.dim())))
    up = F.interpolate(gathered, size=size, mode="nearest")
    return x * torch.sigmoid(up)


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("extent", [0, 2, 4])
def test_ge_theta_minus_matches_reference(dims, extent):
    ge = GatherExcite(6, spatial_dims=dims, extent=extent)
    x = torch.randn(2, 6, *spatial_shape(dims))
    assert sum(p.numel() for p in ge.parameters()) == 0
    torch.testing.assert_close(ge(x), reference_ge_minus(x, extent), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_ge_theta_global_is_depthwise_conv_over_the_map(dims):
    size = spatial_shape(dims)
    ge = GatherExcite(4, spatial_dims=dims, param_gather=True, feat_size=size)
    conv, bn = ge.gather[0], ge.gather[1]
    assert conv.weight.shape == (4, 1, *size)
    x = torch.randn(3, 4, *size)
    ge.eval()
    g = (x * conv.weight.view(1, 4, *size)).flatten(2).sum(-1)
    g = (g - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    torch.testing.assert_close(ge(x), x * torch.sigmoid(g).view(3, 4, *[1] * dims), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("extent,convs", [(2, 1), (4, 2), (8, 3)])
def test_ge_theta_extent_chains_log2_strided_depthwise_convs(extent, convs):
    ge = GatherExcite(8, extent=extent, param_gather=True)
    strided = [m for m in ge.gather if isinstance(m, torch.nn.Conv2d)]
    assert len(strided) == convs and all(c.stride == (2, 2) and c.groups == 8 for c in strided)
    x = torch.randn(2, 8, 16, 12)
    assert ge(x).shape == x.shape


def test_ge_theta_plus_adds_an_se_bottleneck():
    ge = GatherExcite(64, param_gather=True, mlp=True, reduction=16, feat_size=7)
    mlp_params = sum(p.numel() for p in ge.mlp.parameters())
    assert mlp_params == 64 * 4 + 4 + 4 * 64 + 64
    x = torch.randn(2, 64, 7, 7)
    y = ge(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert ge.gather[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_ge_low_precision(dtype):
    ge = GatherExcite(8, extent=2)
    x = torch.randn(2, 8, 8, 8)
    out = ge(x.to(dtype))
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), ge(x), rtol=2e-2, atol=2e-2)


def test_ge_theta_without_feat_size_sizes_its_global_gather_at_the_first_forward():
    from seqctx.modules import create_context, insert_context

    lazy = create_context("ge_theta", 4, 3)  # no feat_size: the surgery case
    x = torch.randn(2, 4, 3, 5, 6)
    y = lazy(x)
    assert lazy.gather[0].weight.shape == (4, 1, 3, 5, 6) and y.shape == x.shape
    sized = GatherExcite(4, 3, param_gather=True, feat_size=(3, 5, 6))
    sized.load_state_dict(lazy.state_dict())
    torch.testing.assert_close(sized(x), y)  # the same function once sized
    fresh = create_context("ge_theta", 4, 3)
    fresh.load_state_dict(lazy.state_dict())  # a lazy module loads a checkpoint before any forward
    torch.testing.assert_close(fresh(x), y)
    with pytest.raises(ValueError, match=r"built for \(3, 5, 6\) maps \(feat_size\), got \(3, 5, 7\)"):
        lazy(torch.randn(2, 4, 3, 5, 7))
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8))
    report = insert_context(net, "ge_theta", position="after_norm")  # a whole network by surgery
    assert len(report) == 1 and net(torch.randn(2, 3, 9, 9)).shape == (2, 8, 9, 9)
    assert net[1].context.gather[0].weight.shape == (8, 1, 9, 9)


def test_ge_errors():
    with pytest.raises(ValueError, match="power of two >= 2, got 3"):
        GatherExcite(8, extent=3, param_gather=True)
    with pytest.raises(ValueError, match="spatial_dims must be 1, 2 or 3, got 4"):
        GatherExcite(8, spatial_dims=4)
