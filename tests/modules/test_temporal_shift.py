import pytest
import torch

from seqctx.modules import TemporalShift


def reference_shift(x, t, fold_div):
    nt, c, h, w = x.shape
    v = x.view(nt // t, t, c, h, w)
    out = torch.zeros_like(v)
    fold = c // fold_div
    for i in range(t):
        if i + 1 < t:
            out[:, i, :fold] = v[:, i + 1, :fold]
        if i >= 1:
            out[:, i, fold : 2 * fold] = v[:, i - 1, fold : 2 * fold]
        out[:, i, 2 * fold :] = v[:, i, 2 * fold :]
    return out.view_as(x)


@pytest.mark.parametrize("t,fold_div", [(8, 8), (3, 4), (1, 8)])
def test_temporal_shift_matches_reference(t, fold_div):
    x = torch.randn(2 * t, 16, 3, 3)
    torch.testing.assert_close(TemporalShift(t, fold_div)(x), reference_shift(x, t, fold_div))


def test_temporal_shift_moves_exact_frames():
    t = 4
    # frame index as the value: channel 0 (first fold) sees t+1, channel 1 sees t-1, channel 2 stays
    x = torch.arange(t, dtype=torch.float32).view(t, 1, 1, 1).expand(t, 3, 1, 1).contiguous()
    y = TemporalShift(t, fold_div=3)(x)
    assert y[:, 0].flatten().tolist() == [1, 2, 3, 0]
    assert y[:, 1].flatten().tolist() == [0, 0, 1, 2]
    assert y[:, 2].flatten().tolist() == [0, 1, 2, 3]


def test_temporal_shift_gradient_is_the_reverse_shift():
    x = torch.randn(8, 16, 2, 2, requires_grad=True)
    g = torch.randn(8, 16, 2, 2)
    TemporalShift(4)(x).backward(g)
    # shifting is a permutation with zeros: <shift(x), g> == <x, shift^T(g)>
    torch.testing.assert_close((TemporalShift(4)(x) * g).sum(), (x * x.grad).sum())


def test_temporal_shift_errors():
    with pytest.raises(ValueError, match="not a multiple of num_segments=3"):
        TemporalShift(3)(torch.randn(4, 8, 2, 2))
