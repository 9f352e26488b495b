import pytest
import torch

from seqctx.modules import (
    CONTEXT_OPERATORS,
    GCT,
    ChannelEquilibrium,
    GatherExcite,
    SqueezeExcite,
    create_context,
    list_contexts,
)


def test_names_and_types():
    assert list_contexts() == ["ce", "gct", "ge", "ge_theta", "ge_theta_plus", "se"]
    assert isinstance(create_context("gct", 16), GCT)
    assert isinstance(create_context("se", 16, reduction=4), SqueezeExcite)
    assert isinstance(create_context("ce", 16), ChannelEquilibrium)
    ge = create_context("ge_theta_plus", 16, spatial_dims=3, feat_size=(2, 4, 4))
    assert isinstance(ge, GatherExcite) and ge.gather is not None and ge.mlp is not None
    assert ge.spatial_dims == 3


@pytest.mark.parametrize("name", ["gct", "se", "ge", "ce"])
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_every_operator_keeps_shape_and_backpropagates(name, dims):
    op = create_context(name, 16, spatial_dims=dims)
    x = torch.randn(2, 16, *[6] * dims, requires_grad=True)
    y = op(x)
    assert y.shape == x.shape
    y.square().sum().backward()
    assert torch.isfinite(x.grad).all()


def test_parameters_are_one_dimensional_per_channel():
    for name in ("gct", "ce"):
        op = create_context(name, 32)
        for pname, p in op.named_parameters():
            if "fc" not in pname:
                assert p.ndim == 1, pname


def test_unknown_name_lists_valid_ones():
    with pytest.raises(
        ValueError, match="unknown context operator 'sk'; valid names: ce, gct, ge, ge_theta, ge_theta_plus, se"
    ):
        create_context("sk", 8)


@pytest.mark.parametrize("name", sorted(CONTEXT_OPERATORS))
def test_every_operator_keeps_the_constructor_contract(name):
    kwargs = {"feat_size": (4, 5, 5)} if name.startswith("ge_") else {}
    op = create_context(name, 16, 3, **kwargs)  # (channels, spatial_dims, ...)
    assert op(torch.randn(2, 16, 4, 5, 5)).shape == (2, 16, 4, 5, 5)
    with pytest.raises(ValueError, match=r"\(channels=16, spatial_dims=3\) expects \(N, 16, \*S\) with 3 spatial"):
        op(torch.randn(2, 16, 5, 5))
    with pytest.raises(ValueError, match="spatial_dims must be 1, 2 or 3, got 4"):
        create_context(name, 16, 4)
