import json

import numpy as np
import pytest

from seqctx.cli import main
from seqctx.video.data import SomethingSomethingV2, SynthConfig, build_sampler, generate_synthetic, read_frames
from seqctx.video.data.synthetic import render_video


def test_synthetic_set_is_real_h264_in_ssv2_format(tmp_path):
    cfg = SynthConfig(classes=4, videos_per_class=4, num_frames=12, size=64, seed=1)
    paths = generate_synthetic(tmp_path, cfg)
    labels = json.loads(paths["labels"].read_text())
    assert labels == {
        "Moving something from left to right": "0",
        "Moving something from right to left": "1",
        "Moving something up": "2",
        "Moving something down": "3",
    }
    ds = SomethingSomethingV2(
        paths["train"], paths["labels"], paths["root"], sampler=build_sampler("segments", train=False, num_segments=4)
    )
    val = json.loads(paths["validation"].read_text())
    assert len(ds) == 12 and len(val) == 4 and sorted(r.label for r in ds.index) == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    clip, label, _ = ds[0]
    assert clip.shape == (1, 4, 64, 64, 3)
    import av

    with av.open(str(paths["root"] / f"{ds.index[0].id}.mp4")) as c:
        assert c.streams.video[0].codec_context.name == "h264" and c.streams.video[0].frames == 12
    # deterministic given the seed: the same annotations and (up to the encoder) the same frames
    again = generate_synthetic(tmp_path / "again", cfg)
    assert again["train"].read_text() == paths["train"].read_text()
    a = read_frames(paths["root"] / "0000001.mp4", list(range(12)))
    b = read_frames(again["root"] / "0000001.mp4", list(range(12)))
    assert (a.float() - b.float()).abs().mean() < 1.0
    f1, _ = render_video(3, cfg, np.random.default_rng([1, 3, 0]))
    f2, _ = render_video(3, cfg, np.random.default_rng([1, 3, 0]))
    assert np.array_equal(f1, f2)


@pytest.mark.parametrize("pair", [0, 1, 2, 3, 4])
def test_paired_classes_are_each_others_time_reversal(pair):
    cfg = SynthConfig(num_frames=10, size=32)
    forward, _ = render_video(2 * pair, cfg, np.random.default_rng(7))
    backward, _ = render_video(2 * pair + 1, cfg, np.random.default_rng(7))
    assert np.array_equal(forward[::-1], backward)  # same frames, reversed order: TSN cannot tell them apart
    assert not np.array_equal(forward[0], forward[-1])  # but the frames do change over time


def test_left_to_right_moves_right(tmp_path):
    frames, _ = render_video(0, SynthConfig(num_frames=8, size=64), np.random.default_rng(0))
    bright = frames.astype(float).sum(-1) > 300
    xs = [np.nonzero(f)[1].mean() for f in bright]
    assert all(b > a for a, b in zip(xs, xs[1:], strict=False))


def test_cli_synth_and_check(tmp_path, capsys):
    assert (
        main(
            [
                "data",
                "synth",
                str(tmp_path / "s"),
                "--classes",
                "2",
                "--videos-per-class",
                "2",
                "--size",
                "32",
                "--frames",
                "8",
            ]
        )
        == 0
    )
    ann, labels, root = tmp_path / "s" / "train.json", tmp_path / "s" / "labels.json", tmp_path / "s" / "videos"
    assert main(["data", "check", str(ann), "--root", str(root), "--labels", str(labels)]) == 0
    assert "2 videos: 2 ok, 0 missing, 0 unreadable, 0 too_short" in capsys.readouterr().out
    (root / "0000001.mp4").write_bytes(b"")  # one video goes bad, another is too short for 16 frames
    code = main(
        ["data", "check", str(ann), "--root", str(root), "--labels", str(labels), "--min-frames", "9", "--workers", "2"]
    )
    out = capsys.readouterr().out
    assert code == 1 and "1 unreadable" in out and "1 too_short" in out and "0000001" in out


def test_synth_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="2 to 10 classes, got 11"):
        generate_synthetic(tmp_path, SynthConfig(classes=11))
    with pytest.raises(ValueError, match="multiple of 32"):
        generate_synthetic(tmp_path, SynthConfig(size=48))
