"""`seqctx data prepare` on data as it comes: clips cut with `ffmpeg -ss -c copy`, sources smaller
than the short side, names that collide, reruns with other settings, splits prepared one after
the other into one folder, annotations that live in OUT, two prepares at once."""

import fcntl
import shutil
import subprocess
from pathlib import Path

import pytest

from seqctx.cli import main
from seqctx.errors import DataError
from seqctx.video.data import KineticsDataset, VideoListDataset, open_video, read_frames
from seqctx.video.data.prepare import FAILURES_FILE, SETTINGS_FILE, prepare_dataset

from .test_exact_and_scaled_decoding import numbered_clip, sequential

DATA = Path(__file__).parents[2] / "data"
MP4 = DATA / "kinetics" / "SOX5yA1l24A_000299_000309.mp4"


def prepare(annotation: Path, root: Path, out: Path, **kwargs):
    return prepare_dataset(VideoListDataset(annotation, root), annotation, out, progress=False, **kwargs)


def test_a_clip_cut_with_stream_copy_is_converted_with_every_frame_that_decodes(tmp_path):
    root = tmp_path / "videos"
    root.mkdir()
    assert shutil.which("ffmpeg"), "the ffmpeg command comes with the system FFmpeg (scripts/install_ffmpeg_libs.sh)"
    cut = ["ffmpeg", "-v", "error", "-ss", "3.3", "-i", str(MP4), "-t", "4", "-c", "copy", str(root / "cut.mp4")]
    subprocess.run(cut, check=True)
    decoded = sequential(root / "cut.mp4")
    announced = open_video(root / "cut.mp4", "pyav").num_frames
    assert announced > len(decoded)  # the packets before the edit list are counted, not shown
    (tmp_path / "list.txt").write_text("cut.mp4 0\n")
    report = prepare(tmp_path / "list.txt", root, tmp_path / "out", short_side=128)
    assert (report.converted, report.failed) == (1, [])
    (vid, note), = report.notes  # fmt: skip
    assert note == f"{len(decoded)} frames decode, the container announces {announced}"
    copy = tmp_path / "out" / "cut.mp4"
    assert open_video(copy).num_frames == len(decoded)
    assert not list((tmp_path / "out").glob(".*partial*"))
    assert prepare(tmp_path / "list.txt", root, tmp_path / "out", short_side=128).skipped == 1  # recorded as whole


def test_sources_smaller_than_the_short_side_are_copied_at_their_size(tmp_path):
    root = tmp_path / "videos"
    root.mkdir()
    numbered_clip(root / "small.mp4", "libx264")  # 64x48
    (tmp_path / "list.txt").write_text("small.mp4 0\n")
    report = prepare(tmp_path / "list.txt", root, tmp_path / "out", short_side=128)
    assert report.notes == [("small.mp4", "kept at its size 64x48: not larger than --short-side 128")]
    assert read_frames(tmp_path / "out" / "small.mp4", [0]).shape == (1, 48, 64, 3)


def test_two_sources_for_one_output_are_refused_before_any_work(tmp_path):
    root = tmp_path / "videos"
    root.mkdir()
    shutil.copy(MP4, root / "a.mp4")
    numbered_clip(root / "a.avi", "mpeg4")
    (tmp_path / "list.txt").write_text("a.avi 0\na.mp4 1\n")
    with pytest.raises(
        DataError, match=r"videos 'a.avi' \(.*a.avi\) and 'a.mp4' \(.*a.mp4\) would both be prepared as"
    ):
        prepare(tmp_path / "list.txt", root, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_rerun_with_other_settings_is_refused_naming_them(tmp_path, capsys):
    root = tmp_path / "videos"
    root.mkdir()
    numbered_clip(root / "v.mp4", "libx264")
    (tmp_path / "list.txt").write_text("v.mp4 0\n")
    args = ["data", "prepare", str(tmp_path / "list.txt"), "--root", str(root), "--out", str(tmp_path / "out")]
    assert main([*args, "--short-side", "32"]) == 0
    assert main([*args, "--short-side", "24"]) == 2
    err = capsys.readouterr().err
    assert "holds copies made with short_side=32, keyint=16, crf=18, format=mp4" in err
    assert f"({tmp_path / 'out' / SETTINGS_FILE}), not short_side=24" in err
    assert main([*args, "--short-side", "32"]) == 0 and "0 converted, 1 skipped" in capsys.readouterr().out


def kinetics_split(tmp_path: Path, name: str, rows: list[tuple[str, str]]) -> Path:
    csv = tmp_path / f"{name}.csv"
    csv.write_text("label,youtube_id,time_start,time_end,split\n" + "".join(
        f'"{label}",{vid},0,10,{name}\n' for label, vid in rows))  # fmt: skip
    return csv


def test_splits_prepared_one_after_the_other_share_one_class_numbering(tmp_path):
    root = tmp_path / "k400"
    root.mkdir()
    for vid in ("aaa", "bbb", "ccc"):
        shutil.copy(MP4, root / f"{vid}_000000_000010.mp4")
    train = kinetics_split(tmp_path, "train", [("abseiling", "aaa"), ("using segway", "bbb")])
    val = kinetics_split(tmp_path, "val", [("using segway", "ccc")])  # alone, it would be class 0
    out = tmp_path / "frames"
    for csv in (train, val):
        prepare_dataset(KineticsDataset(csv, root), csv, out, short_side=64, frames=True, progress=False)
    assert (out / "classes.txt").read_text() == "abseiling\nusing segway\n"
    assert (out / "val_frames.txt").read_text().split()[-1] == "1"  # using segway, as in train
    ds = VideoListDataset(out / "val_frames.txt", out, classes=["abseiling", "using segway"])
    assert ds.index.labels[0] == 1 and open_video(ds.path(0)).num_frames == 332
    other = kinetics_split(tmp_path, "other", [("juggling", "aaa")])
    with pytest.raises(DataError, match=r"classes.txt \(written by an earlier split\) lacks 1 classes .*'juggling'"):
        prepare_dataset(KineticsDataset(other, root), other, out, short_side=64, frames=True, progress=False)


def test_an_annotation_inside_out_is_never_written_over_and_failures_are_appended(tmp_path):
    root, out = tmp_path / "videos", tmp_path / "out"
    root.mkdir()
    out.mkdir()
    numbered_clip(root / "v.avi", "mpeg4")
    mine = "v.avi 0\nmissing.avi 1\n"
    (out / "train.txt").write_text(mine)
    for _ in range(2):
        report = prepare(out / "train.txt", root, out, short_side=32)
        assert report.annotation == str(out / "train_prepared.txt") and len(report.failed) == 1
    assert (out / "train.txt").read_text() == mine
    assert (out / "train_prepared.txt").read_text() == "v.mp4 0\n"
    failures = (out / FAILURES_FILE).read_text().splitlines()
    assert [line.startswith("#") for line in failures] == [True, False, True, False]


def test_two_prepares_into_one_folder_do_not_run_at_once(tmp_path):
    root, out = tmp_path / "videos", tmp_path / "out"
    root.mkdir()
    out.mkdir()
    numbered_clip(root / "v.mp4", "libx264")
    (tmp_path / "list.txt").write_text("v.mp4 0\n")
    with open(out / ".prepare.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # what a prepare running in another process holds
        with pytest.raises(DataError, match=f"another `seqctx data prepare` is writing into {out}"):
            prepare(tmp_path / "list.txt", root, out, short_side=32)
    assert prepare(tmp_path / "list.txt", root, out, short_side=32).converted == 1


def test_something_something_v1_frames_prepared_to_mp4_get_a_list_that_train_reads(tmp_path):
    from PIL import Image

    from seqctx.video.data import SomethingSomethingV1

    root = tmp_path / "20bn-something-something-v1"
    for vid in ("1001", "1002"):
        (root / vid).mkdir(parents=True)
        for i in range(1, 13):
            Image.new("RGB", (176, 100), (20 * i, 0, 0)).save(root / vid / f"{i:05d}.jpg")
    (tmp_path / "labels.csv").write_text("Holding something\nPushing something\n")
    (tmp_path / "train.csv").write_text("1001;Pushing something\n1002;Holding something\n")
    dataset = SomethingSomethingV1(tmp_path / "train.csv", tmp_path / "labels.csv", root)
    report = prepare_dataset(dataset, tmp_path / "train.csv", tmp_path / "out", short_side=64, progress=False)
    assert report.converted == 2 and report.annotation == str(tmp_path / "out" / "train.txt")
    assert (tmp_path / "out" / "train.txt").read_text() == "1001.mp4 1\n1002.mp4 0\n"
    ds = VideoListDataset(tmp_path / "out" / "train.txt", tmp_path / "out")
    frames = read_frames(ds.path(0), list(range(12)))
    assert frames.shape == (12, 64, 112, 3) and frames[-1, ..., 0].float().mean() > frames[0, ..., 0].float().mean()
    (tmp_path / "test.csv").write_text("1002\n")  # the test split has no labels
    dataset = SomethingSomethingV1(tmp_path / "test.csv", tmp_path / "labels.csv", root)
    report = prepare_dataset(dataset, tmp_path / "test.csv", tmp_path / "out", short_side=64, progress=False)
    assert (report.skipped, report.unlabelled) == (1, 1) and (tmp_path / "out" / "test.txt").read_text() == ""
    assert "1 prepared videos have no label and are not in it" in report.summary()


def test_sources_that_fail_are_named_in_words_and_leave_no_partial_file(tmp_path):
    import av
    import numpy as np

    root = tmp_path / "videos"
    root.mkdir()
    numbered_clip(root / "ok.avi", "mpeg4")
    with av.open(str(root / "sound.mp4"), "w") as container:  # audio only: no video stream
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    data = MP4.read_bytes()
    (root / "cut.mp4").write_bytes(data[: len(data) // 2])  # the moov box is at the end: unreadable
    (tmp_path / "test.txt").write_text("ok.avi 0\nsound.mp4 1\ncut.mp4 2\n")
    report = prepare(tmp_path / "test.txt", root, tmp_path / "out", short_side=32)
    reasons = dict(report.failed)
    assert report.converted == 1 and set(reasons) == {"sound.mp4", "cut.mp4"}
    assert reasons["sound.mp4"].endswith("sound.mp4: the file has no video stream")
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.suffix == ".mp4" or "partial" in p.name) == [
        "ok.mp4"
    ]


def test_a_video_that_takes_longer_than_the_time_limit_fails_named_and_the_rest_goes_on(tmp_path, monkeypatch):
    import time

    from seqctx.video.data import prepare as prepare_module

    root = tmp_path / "videos"
    root.mkdir()
    numbered_clip(root / "slow.mp4", "libx264")
    numbered_clip(root / "fast.mp4", "libx264")
    real = prepare_module._source_frames

    def slow_source(path, backend, short_side):
        frames, count, rate, note = real(path, backend, short_side)
        if Path(path).name == "slow.mp4":  # a decoder that crawls: 0.1 s a frame, 48 frames
            frames = (time.sleep(0.1) or frame for frame in frames)
        return frames, count, rate, note

    monkeypatch.setattr(prepare_module, "_source_frames", slow_source)
    (tmp_path / "list.txt").write_text("slow.mp4 0\nfast.mp4 1\n")
    start = time.monotonic()
    report = prepare(tmp_path / "list.txt", root, tmp_path / "out", short_side=32, timeout=1.0)
    assert time.monotonic() - start < 4.0
    assert report.converted == 1 and report.failed == [
        ("slow.mp4", f"{root / 'slow.mp4'}: took longer than 1 s (--timeout)")
    ]
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if "mp4" in p.name) == ["fast.mp4"]


def test_paths_a_list_file_cannot_hold_are_refused_before_any_work(tmp_path):
    from seqctx.video.data import KineticsDataset

    root = tmp_path / "k400"
    (root / "using segway").mkdir(parents=True)  # Kinetics' {label}/{id} layout
    shutil.copy(MP4, root / "using segway" / "aaa_000000_000010.mp4")
    csv = kinetics_split(tmp_path, "val", [("using segway", "aaa")])
    with pytest.raises(
        DataError, match=r"1 videos have whitespace in their paths \('aaa_000000_000010'\).*no --frames"
    ):
        prepare_dataset(KineticsDataset(csv, root), csv, tmp_path / "frames", frames=True, progress=False)
    assert not (tmp_path / "frames").exists()
    report = prepare_dataset(KineticsDataset(csv, root), csv, tmp_path / "mp4", short_side=64, progress=False)
    assert report.converted == 1 and (tmp_path / "mp4" / "using segway" / "aaa_000000_000010.mp4").is_file()
