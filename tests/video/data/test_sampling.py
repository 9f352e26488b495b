import numpy as np
import pytest

from seqctx.video.data import build_sampler, sample_dense, sample_segments


def test_segment_centres_and_twice():
    assert sample_segments(300, 8, train=False) == [18, 56, 93, 131, 168, 206, 243, 281]
    assert sample_segments(16, 4, train=False, twice=True) == [2, 6, 10, 14, 0, 4, 8, 12]


def test_segment_training_draws_one_frame_per_segment():
    for seed in range(50):
        idx = sample_segments(100, 8, train=True, rng=seed)
        assert len(idx) == 8
        for i, f in enumerate(idx):
            assert int(12.5 * i) <= f < int(12.5 * (i + 1))
    # deterministic given the generator's seed, different across seeds
    assert sample_segments(100, 8, train=True, rng=3) == sample_segments(100, 8, train=True, rng=3)
    assert len({tuple(sample_segments(100, 8, train=True, rng=s)) for s in range(10)}) > 1


@pytest.mark.parametrize("train", [True, False])
def test_short_videos_repeat_frames(train):
    idx = sample_segments(3, 8, train=train, rng=0)
    assert len(idx) == 8 and all(0 <= i < 3 for i in idx) and idx == sorted(idx)
    assert sample_segments(1, 8, train=train, rng=0) == [0] * 8


def test_dense_clips():
    assert sample_dense(300, 8, 8, train=False) == [[122 + 8 * k for k in range(8)]]  # centred
    clips = sample_dense(100, 4, 2, train=False, num_clips=3)
    assert clips == [[15, 17, 19, 21], [47, 49, 51, 53], [78, 80, 82, 84]]
    for seed in range(20):
        (idx,) = sample_dense(100, 16, 4, train=True, rng=seed)
        assert idx[0] <= 100 - 61 and np.all(np.diff(idx) == 4)
    # longer than the video: loop back to the start
    assert sample_dense(10, 8, 2, train=False) == [[0, 2, 4, 6, 8, 0, 2, 4]]


def test_build_sampler_and_errors():
    twice = build_sampler("segments", train=False, num_segments=4, num_clips=2)
    assert twice(16) == [[2, 6, 10, 14], [0, 4, 8, 12]]
    dense = build_sampler("dense", train=True, num_segments=8, frame_interval=8, num_clips=10)
    clips = dense(300, rng=np.random.default_rng(0))
    assert len(clips) == 1 and len(clips[0]) == 8  # training always takes one clip
    assert build_sampler("segments", train=False, num_segments=4)(16) == [[2, 6, 10, 14]]  # always a list of clips
    with pytest.raises(ValueError, match="num_frames=0"):
        sample_segments(0, 8, train=False)
    with pytest.raises(ValueError, match="'uniform'"):
        build_sampler("uniform", train=True)
