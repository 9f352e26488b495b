"""``seqctx data prepare`` on real clips (Kinetics MP4s, an SSv2 webm) and written ones (an XviD
AVI with B-frames, a phone video turned 90 degrees): frame counts, sizes, orientation, training
items equal to decoding the originals at the same short side, resuming, and the sources untouched."""

import hashlib
import math
import shutil
from pathlib import Path

import pytest
import torch

from seqctx.cli import main
from seqctx.video.data import KineticsDataset, VideoListDataset, build_sampler, build_transform, open_video
from seqctx.video.data.backends.headers import video_track
from seqctx.video.data.decode import read_frames
from seqctx.video.data.prepare import FAILURES_FILE, prepare_dataset

from .test_decode import write_clip
from .test_exact_and_scaled_decoding import numbered_clip, sequential

DATA = Path(__file__).parents[2] / "data"
K400 = DATA / "kinetics"
CSV = K400 / "k400_val_sample.csv"


def digest(folder: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def items(dataset, count):
    return [dataset[i][0] for i in range(count)]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10 * math.log10(255**2 / (a.float() - b.float()).pow(2).mean().item())


def kinetics(root, short_side=None):
    return KineticsDataset(
        CSV, root, label_map=K400 / "label_map_k400.txt", on_error="drop", short_side=short_side,
        sampler=build_sampler("segments", train=False, num_segments=8),
        transform=build_transform(False, size=112, scale_size=128),
    )  # fmt: skip


def test_kinetics_videos_are_converted_resumed_and_give_the_same_training_items(tmp_path):
    root = tmp_path / "k400"
    shutil.copytree(K400, root)
    before = digest(root)
    out = tmp_path / "prepared"
    report = prepare_dataset(kinetics(root), CSV, out, short_side=128, workers=2, progress=False)
    assert (report.converted, report.skipped, len(report.failed)) == (2, 0, 2)  # two rows are absent on purpose
    assert {vid for vid, _ in report.failed} == {"WUzgd7C1pWA_000101_000111", "--33Lscn6sk_000004_000014"}
    failures = (out / FAILURES_FILE).read_text().splitlines()
    assert failures[0].startswith("# ") and "2 failed of 4" in failures[0] and len(failures) == 3
    assert report.annotation == ""
    assert report.bytes_after < report.bytes_before
    copies = {"R6llTwEh07w_000000_000010": out / "val" / "using segway" / "R6llTwEh07w_000000_000010.mp4",
              "SOX5yA1l24A_000299_000309": out / "SOX5yA1l24A_000299_000309.mp4"}  # fmt: skip
    for vid, copy in copies.items():  # relative paths kept; every frame kept, at the short side
        original = next(root.rglob(f"{vid}.mp4"))
        prepared = open_video(copy)
        assert prepared.num_frames == len(sequential(original)) and prepared.access == "seek"
        assert prepared.read([0]).shape == (1, 128, 170, 3)
    # The same annotation finds the copies; their training items equal decoding the originals at 128.
    ours = [x for x in items(kinetics(out), 4) if x is not None]
    theirs = [x for x in items(kinetics(root, short_side=128), 4) if x is not None]
    assert len(ours) == len(theirs) == 2
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape and psnr(a, b) >= 30.0, psnr(a, b)
    # A rerun skips whole outputs and replaces a partial one; the sources are never touched.
    copy = copies["SOX5yA1l24A_000299_000309"]
    copy.write_bytes(copy.read_bytes()[: copy.stat().st_size // 2])
    report = prepare_dataset(kinetics(root), CSV, out, short_side=128, progress=False)
    assert (report.converted, report.skipped) == (1, 1)
    assert open_video(copy).num_frames == 332
    assert digest(root) == before


def test_a_list_of_avi_webm_and_phone_videos_becomes_mp4s_with_a_new_annotation(tmp_path):
    root = tmp_path / "videos"
    (root / "a").mkdir(parents=True)
    numbered_clip(root / "a" / "xvid.avi", "mpeg4")
    write_clip(root / "phone.mp4", 90)
    shutil.copy(DATA / "ssv2" / "videos" / "100005.webm", root / "a" / "clip.webm")
    (tmp_path / "train.txt").write_text("a/xvid.avi 0\nphone.mp4 1\na/clip.webm 2\n")
    out = tmp_path / "out"
    code = main(["data", "prepare", str(tmp_path / "train.txt"), "--root", str(root), "--out", str(out),
                 "--short-side", "32", "--keyint", "4"])  # fmt: skip
    assert code == 0
    assert (out / "train.txt").read_text() == "a/xvid.mp4 0\nphone.mp4 1\na/clip.mp4 2\n"
    truth = sequential(root / "a" / "xvid.avi")
    prepared = read_frames(out / "a" / "xvid.mp4", list(range(48)))
    assert prepared.shape == (48, 32, 42, 3)  # 64x48 -> short side 32, long 42.7 -> 42
    small = torch.nn.functional.interpolate(torch.from_numpy(truth).permute(0, 3, 1, 2).float(), size=(32, 42),
                                            mode="area").permute(0, 2, 3, 1)  # fmt: skip
    error = (prepared.float()[:, None] - small[None]).abs().flatten(2).mean(2)  # (copy, source)
    assert torch.equal(error.argmin(1), torch.arange(48))  # frame i of the copy is frame i of the source
    phone = read_frames(out / "phone.mp4", [0])
    assert video_track(out / "phone.mp4").rotation == 0 and phone.shape == (1, 64, 32, 3)  # the turn is baked in
    assert phone[0, -1, 0, 0] > 200  # the coded top-left marker is displayed bottom-left
    assert open_video(out / "a" / "clip.mp4").num_frames == 53
    ds = VideoListDataset(out / "train.txt", out)
    assert [ds.path(i).name for i in range(3)] == ["xvid.mp4", "phone.mp4", "clip.mp4"]


def test_frame_folders_and_their_annotation(tmp_path):
    root = tmp_path / "videos"
    root.mkdir()
    shutil.copy(DATA / "ssv2" / "videos" / "100005.webm", root / "100005.webm")
    (tmp_path / "list.txt").write_text("100005.webm 3\n")
    report = prepare_dataset(
        VideoListDataset(tmp_path / "list.txt", root), tmp_path / "list.txt", tmp_path / "frames", short_side=64,
        frames=True, progress=False,
    )  # fmt: skip
    assert report.converted == 1 and (tmp_path / "frames" / "list_frames.txt").read_text() == "100005 53 3\n"
    ds = VideoListDataset(tmp_path / "frames" / "list_frames.txt", tmp_path / "frames")
    assert type(ds.open(ds.path(0))).name == "frames" and open_video(ds.path(0), "frames").num_frames == 53
    jpeg = read_frames(ds.path(0), [10], "frames")
    video = read_frames(root / "100005.webm", [10], short_side=64)
    assert jpeg.shape == video.shape == (1, 64, 114, 3) and psnr(jpeg, video) >= 30.0
    report = prepare_dataset(
        VideoListDataset(tmp_path / "list.txt", root), tmp_path / "list.txt", tmp_path / "frames", short_side=64,
        frames=True, progress=False,
    )  # fmt: skip
    assert (report.converted, report.skipped) == (0, 1)


def test_prepare_refuses_to_write_over_the_sources_and_odd_sizes(tmp_path):
    from seqctx.errors import DataError

    (tmp_path / "list.txt").write_text("x.mp4 0\n")
    ds = VideoListDataset(tmp_path / "list.txt", tmp_path)
    with pytest.raises(DataError, match="is the data root"):
        prepare_dataset(ds, tmp_path / "list.txt", tmp_path, progress=False)
    with pytest.raises(DataError, match="must be an even number of pixels"):
        prepare_dataset(ds, tmp_path / "list.txt", tmp_path / "o", short_side=255, progress=False)
