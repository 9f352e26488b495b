import pytest

from seqctx.video.data import SynthConfig, generate_synthetic


@pytest.fixture(scope="session")
def synth(tmp_path_factory):
    """16 H.264 videos of 4 classes (12 for training, 4 for validation), 8 frames of 32x32."""
    root = tmp_path_factory.mktemp("synth")
    generate_synthetic(root, SynthConfig(classes=4, videos_per_class=4, num_frames=8, size=32, seed=3))
    return root
