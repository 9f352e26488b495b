"""Every backend through one suite: the registry, ``auto`` with each backend made unavailable in
turn, a time limit on each, decord's global bridge, frame folders named any way, and the whole
data path on a machine without decord."""

import ctypes
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seqctx.errors import ConfigError
from seqctx.video.data import VideoError, guarded, installed_backends, open_video, read_frames
from seqctx.video.data.backends import AUTO_ORDER, REGISTRY, BackendUnavailable, frame_template, why_unavailable
from seqctx.video.data.guarded import open_guarded
from seqctx.video.engine.config import load_config
from seqctx.video.engine.demo import DEMO_CONFIG
from tests.video.engine.runs import tiny_overrides

DATA = Path(__file__).parents[2] / "data"
MP4 = DATA / "kinetics" / "SOX5yA1l24A_000299_000309.mp4"
WEBM = DATA / "ssv2" / "videos" / "100005.webm"
VIDEO_BACKENDS = ["decord", "pyav", "torchcodec"]


def test_the_registry_holds_one_class_per_backend_and_every_backend_runs_in_the_test_environment():
    assert set(REGISTRY) == {"decord", "pyav", "torchcodec", "frames"}
    assert all(cls.name == name for name, cls in REGISTRY.items())
    assert installed_backends() == list(AUTO_ORDER) == ["pyav", "decord", "torchcodec"]  # torchcodec is not skipped
    with pytest.raises(ValueError, match="unknown video backend 'opencv'; valid backends: auto, decord"):
        open_video(MP4, "opencv")


@pytest.fixture
def without(monkeypatch):
    """``without(name)``: backend ``name`` cannot run in this process (what it requires does not
    import; PyAV stays importable, as the decord backend's probe uses it)."""

    def block(name: str) -> None:
        monkeypatch.setattr(REGISTRY[name], "requires", "seqctx_test_absent_module")
        why_unavailable.cache_clear()

    yield block
    why_unavailable.cache_clear()


@pytest.mark.parametrize("missing", VIDEO_BACKENDS)
def test_auto_reads_with_the_next_backend_when_one_is_unavailable(without, missing):
    indices = [0, 100, 331, 5]
    full = read_frames(MP4, indices, short_side=128)
    without(missing)
    assert missing not in installed_backends()
    source = open_video(MP4, short_side=128)
    assert type(source).name == next(name for name in AUTO_ORDER if name != missing)
    frames = source.read(indices)
    assert frames.shape == full.shape and (frames.float() - full.float()).abs().mean() < 3.0
    with pytest.raises(BackendUnavailable, match=f"the video backend '{missing}' cannot run here: .*pip install"):
        open_video(MP4, missing)


def test_auto_falls_back_per_video_and_names_every_reason(tmp_path):
    raw = tmp_path / "clip.h264"  # a raw stream: decord and torchcodec cannot index it, PyAV can
    with __import__("av").open(str(MP4)) as src, __import__("av").open(str(raw), "w", format="h264") as dst:
        stream = dst.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 340, 256, "yuv420p"
        for i, frame in enumerate(src.decode(video=0)):
            if i == 10:
                break
            dst.mux(stream.encode(frame.reformat(format="yuv420p")))
        dst.mux(stream.encode())
    assert type(open_video(raw)).name == "pyav" and open_video(raw).num_frames == 10
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"junk" * 100)
    with pytest.raises(VideoError) as info:
        open_video(corrupt)
    message = str(info.value)
    assert message.startswith(f"{corrupt}: no installed backend opens it: PyAV cannot open it: ")
    assert "decord cannot open it: " in message and "torchcodec cannot open it: " in message
    assert ".cpp" not in message and message.count(str(corrupt)) == 1  # no C++ locations, the path once


@pytest.mark.parametrize("backend", VIDEO_BACKENDS)
def test_each_backend_reads_the_same_frames_at_a_short_side(backend):
    indices = [331, 0, 200, 200]
    ref = read_frames(MP4, indices, "pyav", short_side=96)
    out = read_frames(MP4, indices, backend, short_side=96)
    assert out.shape == ref.shape == (4, 96, 128, 3) and out.dtype == torch.uint8
    assert torch.equal(out[2], out[3]) and (out.float() - ref.float()).abs().mean() < 3.0


def test_torchcodec_resizes_in_its_decoder_in_displayed_orientation(tmp_path):
    from .test_decode import write_clip

    for rotation in (90, 270):
        path = tmp_path / f"phone{rotation}.mp4"
        write_clip(path, rotation)
        ref, out = (read_frames(path, [0, 11], b, short_side=16) for b in ("pyav", "torchcodec"))
        assert out.shape == ref.shape == (2, 32, 16, 3)
        assert (out.float() - ref.float()).abs().mean() < 6.0


@pytest.fixture
def hang(tmp_path):
    """A copy of the real clip named hang.mp4; every backend's decode blocks in C for 1000 s on
    it (the helper process is restarted so that it is forked with the patch)."""
    shutil.copy(MP4, tmp_path / "hang.mp4")
    guarded.stop_helper()
    yield tmp_path / "hang.mp4"
    guarded.stop_helper()


@pytest.mark.parametrize("backend", VIDEO_BACKENDS)
def test_a_decode_that_hangs_is_stopped_at_the_time_limit(hang, backend, monkeypatch):
    real = REGISTRY[backend].decode

    def blocking(self, unique):
        if Path(self.path).name == "hang.mp4":
            ctypes.CDLL(None).sleep(1000)
        return real(self, unique)

    monkeypatch.setattr(REGISTRY[backend], "decode", blocking)
    source = open_guarded(hang, 3.0, backend=backend, short_side=64)
    assert source.num_frames == 332
    with pytest.raises(VideoError, match=r"hang\.mp4: decoding took longer than 3 s \(data\.decode_timeout\)"):
        source.read([0, 10])
    shutil.copy(MP4, hang.parent / "ok.mp4")
    assert open_guarded(hang.parent / "ok.mp4", 30, backend=backend, short_side=64).read([3]).shape == (1, 64, 84, 3)


def test_decord_reads_the_same_whatever_bridge_another_library_set():
    import decord

    indices = [0, 7, 331]
    native = read_frames(MP4, indices, "decord")
    decord.bridge.set_bridge("torch")  # what importing pytorchvideo does, process-wide
    try:
        assert torch.equal(read_frames(MP4, indices, "decord"), native)
        source = open_video(MP4, "decord")
        source.access = "sequential"  # the next() path too
        assert torch.equal(source.read(indices), native)
    finally:
        decord.bridge.set_bridge("native")


def write_frames(folder: Path, names: list[str], size=(24, 32)) -> None:
    """Image files ``names`` whose red level is 10 x their position in the list."""
    from PIL import Image

    folder.mkdir(parents=True)
    for k, name in enumerate(names):
        Image.new("RGB", size[::-1], (10 * k, 0, 0)).save(folder / name)


@pytest.mark.parametrize(
    "names,template,start",
    [
        ([f"{i:05d}.jpg" for i in range(1, 9)], "{:05d}.jpg", 1),  # Something-Something v1
        ([f"img_{i:05d}.jpg" for i in range(1, 9)], "img_{:05d}.jpg", 1),  # mmaction2's and TSM's extraction
        ([f"{i:06d}.png" for i in range(0, 8)], "{:06d}.png", 0),  # 0-based PNG
        ([f"frame{i}.jpg" for i in range(0, 12)], "frame{:d}.jpg", 0),  # not padded
    ],
)
def test_frame_folders_are_read_whatever_their_naming(tmp_path, names, template, start):
    write_frames(tmp_path / "v", names)
    (tmp_path / "v" / "cover.jpg").write_bytes((tmp_path / "v" / names[0]).read_bytes())  # a stray file
    assert frame_template([*names, "cover.jpg", "notes.txt"]) == (template, start)
    source = open_video(tmp_path / "v")  # auto: a folder is frames
    assert type(source).name == "frames" and (source.template, source.start, source.num_frames) == (
        template, start, len(names)
    )  # fmt: skip
    red = source.read([len(names) - 1, 0, 3])[..., 0].float().mean((1, 2))
    assert torch.allclose(red, torch.tensor([10.0 * (len(names) - 1), 0.0, 30.0]), atol=3)
    given = open_video(tmp_path / "v", "frames", frame_template=template, first_frame=start)
    assert given.num_frames == len(names)


def test_a_frame_template_that_names_nothing_or_is_malformed_is_an_error(tmp_path):
    write_frames(tmp_path / "v", [f"img_{i:05d}.jpg" for i in range(1, 5)])
    with pytest.raises(VideoError, match=r"holds no frame named like '00001\.jpg'"):
        open_video(tmp_path / "v", frame_template="{:05d}.jpg")
    with pytest.raises(VideoError, match=r"4 frames, but 1 of img_00000\.jpg\.\.img_00003\.jpg are missing"):
        open_video(tmp_path / "v", frame_template="img_{:05d}.jpg", first_frame=0)
    with pytest.raises(ConfigError, match=r"'data.frame_template' is 'img.jpg'; expected a file name with one integer"):
        load_config(None, ["data.frame_template=img.jpg"])
    with pytest.raises(ConfigError, match=r"'data.frame_template' is '\{\}_\{:05d\}.jpg'"):
        load_config(None, ["data.frame_template='{}_{:05d}.jpg'"])


def test_without_decord_the_whole_data_path_runs(synth, tmp_path):
    """On a machine where decord does not install (aarch64 Linux, Apple Silicon): `auto` reads with
    torchcodec or PyAV through train, test, predict, data check and data prepare."""
    blocker = tmp_path / "site"
    (blocker / "decord").mkdir(parents=True)
    (blocker / "decord" / "__init__.py").write_text(
        "raise ImportError('No module named decord (blocked by the test)')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), str(Path.cwd())])}

    def seqctx(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "seqctx", *args], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout + done.stderr

    probe = subprocess.run(
        [sys.executable, "-c", "from seqctx.video.data import installed_backends as i; print(i())"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert probe.stdout.strip() == "['pyav', 'torchcodec']"
    run = tmp_path / "run"
    items = [x for item in tiny_overrides(synth, run, "train.epochs=1", "data.workers=2") for x in ("--set", item)]
    labels = ("--labels", str(synth / "labels.json"))
    seqctx("data", "check", str(synth / "train.json"), "--root", str(synth / "videos"), *labels, "--exact")
    seqctx("train", str(DEMO_CONFIG), *items)
    assert (run / "latest.pt").is_file()
    seqctx("test", "--checkpoint", str(run / "latest.pt"), "--out", str(tmp_path / "test.csv"))
    video = next((synth / "videos").iterdir())
    assert video.name in seqctx("predict", "--checkpoint", str(run / "latest.pt"), str(video))
    seqctx(
        "data",
        "prepare",
        str(synth / "train.json"),
        "--root",
        str(synth / "videos"),
        *labels,
        "--out",
        str(tmp_path / "p"),
    )
    assert len(list((tmp_path / "p").rglob("*.mp4"))) == len(json.loads((synth / "train.json").read_text()))


def test_data_check_reports_the_frame_naming_it_found_and_a_count_the_folder_disagrees_with(tmp_path, capsys):
    from seqctx.cli import main

    for vid in ("a", "b"):
        write_frames(tmp_path / vid, [f"img_{i:05d}.jpg" for i in range(1, 10)])
    (tmp_path / "list.txt").write_text("a 9 0\nb 99 1\n")  # TSM's rawframe list; b's count is wrong
    assert main(["data", "check", str(tmp_path / "list.txt"), "--root", str(tmp_path), "--min-frames", "4"]) == 1
    out = capsys.readouterr().out
    assert "2 videos: 1 ok, 0 missing, 0 unreadable, 0 too_short, 1 miscounted, 0 inexact" in out
    assert "miscounted b: the annotation says 99 frames, the folder holds 9" in out
    assert f"frame folders: img_{{:05d}}.jpg from 1 (found in {tmp_path / 'a'}" in out


def test_a_malformed_frame_template_or_time_limit_on_the_command_line_is_one_message_and_exit_2(tmp_path, capsys):
    from seqctx.cli import main

    write_frames(tmp_path / "a", [f"img_{i:05d}.jpg" for i in range(1, 5)])
    (tmp_path / "list.txt").write_text("a 4 0\n")
    args = [str(tmp_path / "list.txt"), "--root", str(tmp_path)]
    with pytest.raises(SystemExit) as info:
        main(["data", "check", *args, "--frame-template", "{}{}"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --frame-template: '{}{}'; expected a file name with one integer field" in err
    assert "Traceback" not in err
    assert main(["data", "prepare", *args, "--out", str(tmp_path / "out"), "--timeout", "-3"]) == 2
    assert "seqctx: error: --timeout must be a number of seconds >= 0 (0: no limit), got -3" in capsys.readouterr().err
