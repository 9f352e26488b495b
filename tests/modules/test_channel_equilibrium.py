import copy

import pytest
import torch
import torch.nn.functional as F

from seqctx.modules import ChannelEquilibrium, inverse_sqrt_newton
from tests.conftest import spatial_shape


def test_newton_inverse_sqrt_converges_to_eigendecomposition():
    a = torch.randn(3, 8, 64, dtype=torch.float64)
    sigma = a @ a.transpose(1, 2) / 64 + 0.1 * torch.eye(8, dtype=torch.float64)
    evals, evecs = torch.linalg.eigh(sigma)
    exact = evecs @ torch.diag_embed(evals.rsqrt()) @ evecs.transpose(1, 2)
    approx = inverse_sqrt_newton(sigma, iterations=30)
    torch.testing.assert_close(approx, exact, rtol=1e-6, atol=1e-6)

    # three iterations (the paper's T) already shrink the whitening error a lot
    def err(w):
        return (w @ sigma @ w - torch.eye(8, dtype=torch.float64)).norm()

    assert err(inverse_sqrt_newton(sigma, 3)) < 0.6 * err(
        torch.eye(8, dtype=torch.float64).expand(3, 8, 8) / sigma.diagonal(dim1=1, dim2=2).sum(-1).sqrt()[:, None, None]
    )


def reference_ce_train(ce, x):
    """Eqs. 3-9 in float64 with explicit per-group covariance (no pooling, group_size g)."""
    x = x.double()
    n, c = x.shape[:2]
    g = ce.group_size
    flat = x.reshape(n, c, -1)
    outs_bd = torch.empty_like(flat)
    for k in range(c // g):
        z = flat[:, k * g : (k + 1) * g].transpose(0, 1).reshape(g, -1)
        zc = z - z.mean(1, keepdim=True)
        sigma = zc @ zc.T / z.shape[1] + ce.eps * torch.eye(g, dtype=x.dtype)
        tr = torch.trace(sigma)
        s = torch.eye(g, dtype=x.dtype)
        for _ in range(ce.iterations):
            s = 0.5 * (3 * s - s @ s @ s @ (sigma / tr))
        w = s / tr.sqrt()
        outs_bd[:, k * g : (k + 1) * g] = torch.einsum("ij,njl->nil", w, flat[:, k * g : (k + 1) * g])
    inst_var = flat.var(-1, unbiased=False)
    h = F.layer_norm(
        inst_var @ ce.fc1.weight.double().T, (c // 4,), ce.norm.weight.double(), ce.norm.bias.double(), ce.norm.eps
    )
    gate = torch.sigmoid(h.relu() @ ce.fc2.weight.double().T)
    inv_std = 1 / torch.sqrt(x.var(unbiased=False) + ce.eps)
    lam = torch.sigmoid(ce.lambda_logit.double())
    out = lam * outs_bd + (1 - lam) * flat * (gate * inv_std)[..., None]
    return out.reshape(x.shape)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_ce_matches_reference_in_training(dims):
    ce = ChannelEquilibrium(32, dims, group_size=8, reduction=4, pool=1)
    with torch.no_grad():
        ce.lambda_logit.fill_(0.3)
    x = torch.randn(4, 32, *spatial_shape(dims)) * torch.linspace(0.5, 2, 32).view(1, 32, *[1] * dims)
    torch.testing.assert_close(ce(x).double(), reference_ce_train(ce, x), rtol=1e-4, atol=1e-5)


def test_ce_running_estimates_follow_eq_23_and_eval_is_batch_independent():
    ce = ChannelEquilibrium(16, group_size=8, momentum=0.5)
    x = torch.randn(6, 16, 8, 8)
    w, s = ce._batch_statistics(x)
    ce(x)
    torch.testing.assert_close(ce.running_whitening, 0.5 * torch.eye(8).expand(2, 8, 8) + 0.5 * w)
    torch.testing.assert_close(ce.running_inv_std, 0.5 + 0.5 * s)
    ce.eval()
    before = ce.running_whitening.clone()
    full = ce(x)
    single = torch.cat([ce(x[i : i + 1]) for i in range(6)])
    torch.testing.assert_close(full, single, rtol=1e-5, atol=1e-6)
    assert torch.equal(ce.running_whitening, before)  # eval never updates the estimates


def test_ce_decorrelates_correlated_channels():
    ce = ChannelEquilibrium(8, group_size=8, pool=1)
    with torch.no_grad():
        ce.lambda_logit.fill_(30.0)  # BD branch only
    base = torch.randn(512, 8)
    mix = torch.eye(8) + 0.8 * torch.ones(8, 8)
    x = (base @ mix).view(64, 8, 8, 1).permute(0, 2, 1, 3).contiguous()  # (64, 8, 8, 1)
    y = ce(x).transpose(0, 1).reshape(8, -1)
    corr = torch.corrcoef(y)
    off = corr - torch.diag(corr.diagonal())
    corr_in = torch.corrcoef(x.transpose(0, 1).reshape(8, -1))
    assert off.abs().max() < 0.5 * (corr_in - torch.eye(8)).abs().max()


@pytest.mark.parametrize("case", ["batch1", "constant", "rank_deficient", "one_pixel"])
def test_ce_never_produces_nan(case):
    ce = ChannelEquilibrium(16)
    x = {
        "batch1": torch.randn(1, 16, 6, 6),
        "constant": torch.full((4, 16, 6, 6), 3.0),
        "rank_deficient": torch.randn(4, 1, 6, 6).expand(4, 16, 6, 6).contiguous(),
        "one_pixel": torch.randn(1, 16, 1, 1),
    }[case]
    x.requires_grad_(True)
    y = ce(x)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in ce.parameters() if p.grad is not None)
    ce.eval()
    assert torch.isfinite(ce(x)).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_ce_low_precision_computes_statistics_in_fp32(dtype):
    ce = ChannelEquilibrium(16)
    x = torch.randn(4, 16, 6, 6)
    ref = ce(x)
    out = ChannelEquilibrium(16).to(dtype)
    out.load_state_dict(ce.state_dict())
    y = out(x.to(dtype))
    assert y.dtype == dtype
    torch.testing.assert_close(y.float(), ref, rtol=5e-2, atol=5e-2)


def test_ce_parameters_state_dict_and_errors():
    ce = ChannelEquilibrium(64, reduction=4)
    assert ce.fc1.weight.shape == (16, 64) and ce.fc2.weight.shape == (64, 16)
    assert ce.running_whitening.shape == (4, 16, 16)
    twin = ChannelEquilibrium(64)
    ce(torch.randn(2, 64, 4, 4))
    twin.load_state_dict(ce.state_dict())
    assert torch.equal(twin.running_whitening, ce.running_whitening)
    with pytest.raises(ValueError, match="group_size=16 must divide channels=40"):
        ChannelEquilibrium(40)


def test_statistics_run_in_fp32_under_bf16_autocast_at_i3d_sizes():
    torch.manual_seed(0)
    ce = ChannelEquilibrium(32, 3).train()
    with torch.no_grad():
        ce.lambda_logit.fill_(2.0)  # mostly the decorrelation branch
    x = torch.randn(4, 32, 8, 56, 56) * 30 + 5  # M = 4 * 8 * 28 * 28 = 25088 pooled elements per channel
    ref_ce = copy.deepcopy(ce)
    ref = ref_ce(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ce(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)  # half-precision matmuls would miss by ~1e-2
    torch.testing.assert_close(ce.running_whitening, ref_ce.running_whitening)
    low = ce(x.bfloat16())  # a bf16 input: lifted to fp32 inside, returned in bf16
    assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()


def test_fp64_inputs_keep_fp64_statistics():
    torch.manual_seed(0)
    ce = ChannelEquilibrium(16).double().train()
    x = torch.randn(4, 16, 6, 6, dtype=torch.float64, requires_grad=True)
    assert ce(x).dtype == torch.float64
    exact = ChannelEquilibrium(16, pool=1).double().train()
    assert torch.autograd.gradcheck(lambda t: exact(t).square().sum(), (x,))  # fp64 all the way through
