import pytest
import torch

from seqctx.modules import SqueezeExcite
from tests.conftest import spatial_shape


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_se_matches_formula(dims):
    se = SqueezeExcite(32, dims, reduction=4)
    x = torch.randn(3, 32, *spatial_shape(dims))
    z = x.flatten(2).mean(-1)
    g = torch.sigmoid(se.fc2.weight @ torch.relu(se.fc1.weight @ z.T + se.fc1.bias[:, None]) + se.fc2.bias[:, None]).T
    torch.testing.assert_close(se(x), x * g.view(3, 32, *[1] * dims), rtol=1e-5, atol=1e-6)
    assert sum(p.numel() for p in se.parameters()) == 32 * 8 + 8 + 8 * 32 + 32


def test_se_errors():
    with pytest.raises(ValueError, match="reduction must be >= 1, got 0"):
        SqueezeExcite(8, reduction=0)
