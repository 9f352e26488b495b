"""Readers as a cluster runs them: the backend follows the format, frame folders with gaps are
named, decode threads are bounded, native log lines become reasons in words, and a run of failed
videos names them."""

import shutil
from pathlib import Path

import pytest

from seqctx.errors import ConfigError, DataError
from seqctx.video.data import VideoError, VideoListDataset, build_sampler, open_video, read_frames
from seqctx.video.engine import load_config

DATA = Path(__file__).parents[2] / "data"
WEBM = DATA / "ssv2" / "videos" / "100005.webm"


def frame_folder(folder: Path, numbers: range | list[int]) -> Path:
    from torchvision.io import encode_jpeg

    frames = read_frames(WEBM, [0] * len(numbers))
    folder.mkdir(parents=True)
    for n, f in zip(numbers, frames, strict=True):
        (folder / f"{n:05d}.jpg").write_bytes(encode_jpeg(f.permute(2, 0, 1)).numpy().tobytes())
    return folder


def test_the_backend_follows_the_format_and_impossible_pairs_are_config_errors(tmp_path):
    assert load_config(None, ["data.format=ssv1"]).data.backend == "auto"  # frames for folders
    for fmt, backend in (("kinetics", "frames"), ("ssv2", "frames"), ("ssv1", "decord")):
        with pytest.raises(ConfigError, match=f"'data.backend' is '{backend}', but data.format='{fmt}'"):
            load_config(None, [f"data.format={fmt}", f"data.backend={backend}"])
    frame_folder(tmp_path / "v1", range(1, 9))
    (tmp_path / "folders.txt").write_text("v1 8 0\n")
    assert type(VideoListDataset(tmp_path / "folders.txt", tmp_path).open(tmp_path / "v1")).name == "frames"
    with pytest.raises(DataError, match=r"lists frame folders .* but the backend is 'decord'"):
        VideoListDataset(tmp_path / "folders.txt", tmp_path, backend="decord")


def test_a_frame_folder_with_a_gap_is_named_and_a_run_of_failures_names_the_videos(tmp_path):
    frame_folder(tmp_path / "gap", [*range(1, 10), *range(31, 52)])  # 00010-00030 absent: 30 files
    with pytest.raises(VideoError, match=r"30 frames, but 21 of 00001\.jpg\.\.00030\.jpg are missing "
                                         r"\(00010\.jpg, 00011\.jpg, 00012\.jpg, \.\.\.\)"):  # fmt: skip
        open_video(tmp_path / "gap", "frames")
    (tmp_path / "list.txt").write_text("gap 30 0\n")
    ds = VideoListDataset(tmp_path / "list.txt", tmp_path, sampler=build_sampler("segments", train=True))
    with pytest.raises(VideoError, match=r"1 videos in a row failed to load, starting at item 0 \(gap: .*are missing"):
        ds[0]


def test_decode_threads_are_bounded_and_native_logs_become_reasons(tmp_path, capfd):
    assert open_video(WEBM, "pyav").stream.codec_context.thread_count == 1
    assert open_video(WEBM, "pyav", num_threads=3).stream.codec_context.thread_count == 3
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"junk" * 100)
    capfd.readouterr()
    with pytest.raises(
        VideoError,
        match=r"corrupt\.mp4: no installed backend opens it: PyAV cannot open it: \w.*decord cannot open it: \w",
    ) as info:
        open_video(corrupt)
    _, err = capfd.readouterr()
    assert "video_reader.cc" not in err and "video_reader.cc" not in str(info.value)  # no C++ log lines
    shutil.copy(WEBM, tmp_path / "ok.webm")
    assert open_video(tmp_path / "ok.webm").num_frames > 0  # stderr is back: reading goes on
