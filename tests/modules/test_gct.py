import pytest
import torch

from seqctx.modules import GCT
from tests.conftest import DTYPE_TOL, spatial_shape


def reference_gct(x, alpha, gamma, beta, mode, eps, after_relu=False):
    """Eqs. 2-4 of the GCT paper, written loop-free but independently of the module."""
    n, c = x.shape[:2]
    flat = x.double().reshape(n, c, -1)
    if mode == "l2":
        s = alpha.double() * torch.sqrt((flat**2).sum(-1) + eps)
        s_hat = s / torch.sqrt((s**2).mean(1, keepdim=True) + eps)
    else:
        s = alpha.double() * (flat if after_relu else flat.abs()).sum(-1)
        s_hat = s / (s.abs().mean(1, keepdim=True) + eps)
    gate = 1 + torch.tanh(gamma.double() * s_hat + beta.double())
    return (flat * gate[..., None]).reshape(x.shape)


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("mode", ["l2", "l1"])
def test_gct_matches_formula(dims, mode):
    gct = GCT(6, dims, mode=mode)
    with torch.no_grad():
        gct.alpha.uniform_(0.5, 1.5)
        gct.gamma.normal_()
        gct.beta.normal_()
    x = torch.randn(3, 6, *spatial_shape(dims))
    ref = reference_gct(x, gct.alpha, gct.gamma, gct.beta, mode, gct.eps)
    torch.testing.assert_close(gct(x).double(), ref, rtol=1e-5, atol=1e-5)


def test_gct_l1_after_relu_uses_plain_sum():
    gct = GCT(4, mode="l1", after_relu=True)
    with torch.no_grad():
        gct.gamma.fill_(0.7)
    x = torch.randn(2, 4, 5, 5).relu()
    ref = reference_gct(x, gct.alpha, gct.gamma, gct.beta, "l1", gct.eps, after_relu=True)
    torch.testing.assert_close(gct(x).double(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_gct_is_exact_identity_at_init(dims, dtype):
    gct = GCT(8, dims).to(dtype)
    x = torch.randn(2, 8, *spatial_shape(dims), dtype=dtype)
    y = gct(x)
    assert y.dtype == dtype
    assert torch.equal(y, x)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gct_low_precision_close_to_fp32(dtype):
    gct = GCT(8)
    with torch.no_grad():
        gct.gamma.normal_()
        gct.beta.normal_()
    x = torch.randn(2, 8, 6, 6)
    ref = gct(x)
    out = gct.to(dtype)(x.to(dtype))
    torch.testing.assert_close(out.float(), ref, rtol=DTYPE_TOL[dtype] * 4, atol=DTYPE_TOL[dtype] * 4)


def test_gct_gradients_and_no_weight_decay():
    gct = GCT(5)
    x = torch.randn(2, 5, 4, 4, requires_grad=True)
    gct(x).square().sum().backward()
    # at init only gamma and beta (through tanh' = 1) receive gradient; alpha's is exactly 0
    assert gct.gamma.grad.abs().sum() > 0 and gct.beta.grad.abs().sum() > 0
    assert torch.all(gct.alpha.grad == 0)
    assert gct.no_weight_decay() == {"beta"}
    assert all(p.ndim == 1 and p.shape == (5,) for p in gct.parameters())


def test_gct_state_dict_round_trip():
    a = GCT(7)
    with torch.no_grad():
        a.gamma.normal_()
    b = GCT(7)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 7, 3, 3)
    torch.testing.assert_close(a(x), b(x))


def test_gct_errors_name_bad_values():
    with pytest.raises(ValueError, match="'l3'"):
        GCT(4, mode="l3")
    with pytest.raises(ValueError, match=r"\(N, 4, \*S\)"):
        GCT(4)(torch.randn(2, 3, 5, 5))


def test_gct_compiles():
    gct = GCT(4)
    with torch.no_grad():
        gct.gamma.normal_()
    x = torch.randn(2, 4, 6, 6)
    compiled = torch.compile(gct, backend="eager")
    torch.testing.assert_close(compiled(x), gct(x))


@pytest.mark.parametrize("mode", ["l2", "l1"])
def test_fp64_inputs_are_not_lowered_to_fp32(mode):
    torch.manual_seed(0)
    gct = GCT(6, mode=mode).double()
    with torch.no_grad():
        gct.gamma.normal_()
        gct.beta.normal_()
    x = torch.randn(3, 6, 7, 7, dtype=torch.float64) * 1e3
    out = gct(x)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, reference_gct(x, gct.alpha, gct.gamma, gct.beta, mode, gct.eps), rtol=1e-12, atol=0)
