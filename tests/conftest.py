import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def spatial_shape(dims: int) -> tuple[int, ...]:
    """Small non-square spatial sizes for 1, 2 and 3 spatial dims."""
    return {1: (11,), 2: (7, 9), 3: (4, 6, 5)}[dims]


DTYPE_TOL = {torch.float32: 1e-5, torch.bfloat16: 3e-2, torch.float16: 3e-3}
