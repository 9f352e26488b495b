"""Online TSM: the uni-directional shift moves exactly its channels from frame t-1; streaming
logits equal the offline model's per-frame logits (no context, GCT, SE, GE, CE); CGC is refused;
reset() isolates streams; the online ONNX graph streams a clip as PyTorch does; `predict --stream`
on a real clip, a frame folder and the ONNX file; a stream that ends early or gets SIGTERM ends
cleanly."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seqctx.cli import main
from seqctx.errors import ConfigError
from seqctx.modules import temporal_shift
from seqctx.video.data.transforms import normalization
from seqctx.video.engine import Trainer
from seqctx.video.engine.builders import make_model
from seqctx.video.models import build_model
from seqctx.video.online import StreamingRecognizer

from ..engine.runs import tiny_config

REAL = Path(__file__).resolve().parents[2] / "data" / "kinetics" / "SOX5yA1l24A_000299_000309.mp4"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def test_the_online_shift_takes_its_fold_from_the_previous_frame_only():
    n, t, c = 2, 5, 16
    x = torch.randn(n * t, c, 3, 3)
    out = temporal_shift(x, t, fold_div=8, online=True).view(n, t, c, 3, 3)
    v, fold = x.view(n, t, c, 3, 3), c // 8
    assert torch.equal(out[:, 1:, :fold], v[:, :-1, :fold])  # from t - 1
    assert torch.equal(out[:, 0, :fold], torch.zeros_like(out[:, 0, :fold]))  # nothing before the first frame
    assert torch.equal(out[:, :, fold:], v[:, :, fold:])  # the rest in place
    later = x.clone().view(n, t, c, 3, 3)
    later[:, 3:] += 1  # frames 3, 4 changed: frames 0..2 of the output do not see it
    assert torch.equal(temporal_shift(later.view_as(x), t, online=True).view(n, t, c, 3, 3)[:, :3], out[:, :3])


def random_statistics(model):
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.bias.shape, generator=g) * 0.4 - 0.2)
    return model.eval()


@pytest.mark.parametrize("context", [None, "gct", "se", "ge", "ge_theta", "ce"])
def test_streaming_logits_equal_the_offline_models_per_frame_logits(context):
    model = random_statistics(build_model("tsm_r18", 5, num_segments=8, width=8, input_size=32, context=context,
                                          shift="online", dropout=0.0))  # fmt: skip
    clip = torch.randint(0, 256, (8, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    scale, offset = normalization(2)
    with torch.no_grad():
        frames = clip.permute(0, 3, 1, 2).float() * scale - offset  # (T, 3, H, W)
        per_frame = model.head(model.trunk(frames))  # the offline model on the whole clip, frame by frame logits
        clip_logits = model(frames.transpose(0, 1).unsqueeze(0))[0]
    recognizer = StreamingRecognizer(model)
    streamed = torch.stack([recognizer.step(frame)[0] for frame in clip])
    torch.testing.assert_close(streamed, per_frame, rtol=0, atol=1e-5)
    torch.testing.assert_close(streamed.mean(0), clip_logits, rtol=0, atol=1e-5)


def test_reset_isolates_streams_and_the_smoothed_scores_average_the_last_frames():
    model = random_statistics(build_model("tsm_r18", 5, num_segments=8, width=8, input_size=32, shift="online"))
    g = torch.Generator().manual_seed(3)
    a, b = (torch.randint(0, 256, (6, 32, 32, 3), dtype=torch.uint8, generator=g) for _ in range(2))
    fresh = StreamingRecognizer(model, smoothing=3)
    expected = [fresh.step(frame) for frame in b]
    reused = StreamingRecognizer(model, smoothing=3)
    for frame in a:
        reused.step(frame)
    reused.reset()
    got = [reused.step(frame) for frame in b]
    for (logits, smooth), (want, want_smooth) in zip(got, expected, strict=True):
        assert torch.equal(logits, want) and torch.equal(smooth, want_smooth)
    carried = StreamingRecognizer(model, smoothing=3)
    for frame in a:
        carried.step(frame)
    assert not torch.equal(carried.step(b[0])[0], expected[0][0])  # without reset, stream a leaks into b
    last = torch.stack([logits.softmax(-1) for logits, _ in expected[-3:]]).mean(0)
    torch.testing.assert_close(expected[-1][1], last)


def test_contexts_that_pool_over_the_clip_and_models_without_a_shift_are_refused(synth, tmp_path):
    with pytest.raises(ValueError, match=r"context 'cgc' pools its gate's context over the clip's frames"):
        build_model("tsm_r18", 5, width=8, context="cgc", shift="online")
    with pytest.raises(ValueError, match=r"tsn_r18 has no shift"):
        build_model("tsn_r18", 5, width=8, shift="online")
    with pytest.raises(ConfigError, match=r"online TSM takes gct, se, ge"):
        make_model(tiny_config(synth, tmp_path, "model.shift=online", "model.context=cgc"))
    with pytest.raises(ValueError, match=r"streaming needs a TSM trained with the online shift"):
        StreamingRecognizer(build_model("tsm_r18", 5, width=8))


@pytest.fixture(scope="module")
def online_run(synth, tmp_path_factory):
    run = tmp_path_factory.mktemp("online")
    with Trainer(tiny_config(synth, run, "model.shift=online", "model.context=gct", "train.epochs=1"),
                 progress=False) as t:  # fmt: skip
        t.fit()
    return run / "latest.pt"


def test_the_online_onnx_graph_streams_a_clip_as_pytorch_does(online_run, tmp_path, capsys):
    out = tmp_path / "online.onnx"
    assert main(["export", "--checkpoint", str(online_run), "--online", "--verify", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "online onnx, input one 32x32 frame per stream" in text and "16 frames streamed" in text
    diff = float(text.rsplit("logit difference ", 1)[1].split()[0])
    assert diff <= 1e-4
    assert main(["predict", "--onnx", str(out), str(REAL)]) == 2
    assert "is an online (frame by frame) model: run it with `seqctx predict --stream`" in capsys.readouterr().err


def test_predict_stream_on_a_real_clip_a_frame_folder_and_the_onnx_file(online_run, tmp_path, capsys):
    args = ["predict", "--stream", str(REAL), "--checkpoint", str(online_run), "--json", "--every", "2", "--top", "3"]
    assert main(args) == 0
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["frame"] for r in records] == list(range(16, 332, 2))  # 166 processed, the first 8 the warm-up
    assert all(len(r["top"]) == 3 and len(r["smoothed"]) == 3 for r in records)
    assert "332 frames read, 166 processed in" in captured.err and "frames/s; latency per frame" in captured.err
    # the same frames as a folder of JPEGs: the same frames read, results close (JPEG is lossy)
    import av

    folder = tmp_path / "frames"
    folder.mkdir()
    with av.open(str(REAL)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i < 24:
                frame.to_image().save(folder / f"img_{i + 1:05d}.jpg", quality=95)
    assert main(["predict", "--stream", str(folder), "--checkpoint", str(online_run), "--json", "--warmup", "0"]) == 0
    assert [json.loads(line)["frame"] for line in capsys.readouterr().out.splitlines()] == list(range(24))
    # the ONNX file gives the PyTorch model's scores, frame by frame
    onnx = tmp_path / "online.onnx"
    assert main(["export", "--checkpoint", str(online_run), "--online", "--out", str(onnx), "--no-optimize"]) == 0
    capsys.readouterr()
    assert main(["predict", "--stream", str(folder), "--onnx", str(onnx), "--json", "--warmup", "0"]) == 0
    from_onnx = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert main(["predict", "--stream", str(folder), "--checkpoint", str(online_run), "--json", "--warmup", "0"]) == 0
    from_torch = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    for a, b in zip(from_onnx, from_torch, strict=True):
        assert [name for name, _ in a["smoothed"]] == [name for name, _ in b["smoothed"]]
        assert max(abs(x - y) for (_, x), (_, y) in zip(a["top"], b["top"], strict=True)) < 1e-4


def stream_command(source, checkpoint, *extra):
    return [sys.executable, "-m", "seqctx", "predict", "--stream", str(source), "--checkpoint", str(checkpoint),
            "--warmup", "0", *extra]  # fmt: skip


def test_a_stream_that_ends_early_or_gets_sigterm_ends_cleanly(online_run, tmp_path):
    import av

    streamable = tmp_path / "faststart.mp4"  # the index first, as streamed files are written
    with av.open(str(REAL)) as src, av.open(str(streamable), "w", options={"movflags": "faststart"}) as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                dst.mux(packet)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(streamable.read_bytes()[: streamable.stat().st_size // 3])  # a stream that breaks off
    done = subprocess.run(stream_command(cut, online_run), env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    read = int(done.stderr.strip().splitlines()[-1].split()[0])
    assert 0 < read < 332 and len(done.stdout.splitlines()) == read
    # the index at the end (not streamable) and cut: one line naming the source
    (tmp_path / "cut_end.mp4").write_bytes(REAL.read_bytes()[: REAL.stat().st_size // 3])
    done = subprocess.run(stream_command(tmp_path / "cut_end.mp4", online_run), env=ENV, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith(
        f"seqctx: error: {tmp_path / 'cut_end.mp4'}: cannot open it as a stream"
    ), done.stderr[-2000:]
    # SIGTERM to the process group while it streams: exit 143, the summary, then the stop line
    proc = subprocess.Popen(stream_command(REAL, online_run), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)  # fmt: skip
    first = proc.stdout.readline()
    assert first.startswith("frame "), proc.stderr.read()[-2000:]
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "Traceback" not in err, err[-2000:]
    lines = err.strip().splitlines()
    assert "frames read" in lines[-2] and lines[-1] == "seqctx: stopped by SIGTERM: predict ended"


def test_the_demos_streamed_accuracy_equals_the_offline_one(online_run):
    from seqctx.video.online.evaluate import streamed_accuracy

    result = streamed_accuracy(online_run)
    assert result.videos == 4 and result.streamed_top1 == result.offline_top1
    assert result.max_logit_diff <= 1e-5
