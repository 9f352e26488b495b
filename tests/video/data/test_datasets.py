import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from seqctx.errors import DataError
from seqctx.video.data import (
    KineticsDataset,
    SomethingSomethingV1,
    SomethingSomethingV2,
    VideoError,
    VideoListDataset,
    build_dataset,
    build_sampler,
    build_transform,
    detect_format,
    read_frames,
)

DATA = Path(__file__).parents[2] / "data"
K400 = DATA / "kinetics"
SSV2 = DATA / "ssv2"


def segments(train=False, n=4, clips=1):
    return build_sampler("segments", train=train, num_segments=n, num_clips=clips)


def test_kinetics_csv_layouts_labels_and_missing_videos(caplog):
    ds = KineticsDataset(K400 / "k400_val_sample.csv", K400, sampler=segments(), on_error="raise")
    assert ds.classes == ["flipping pancake", "using segway"]  # sorted label names
    assert [r.label for r in ds.index] == [1, 1, 1, 0]
    clip, label, meta = ds[0]  # found under val/using segway/
    assert clip.shape == (1, 4, 256, 340, 3) and clip.dtype == torch.uint8 and label == 1
    assert meta["id"] == "R6llTwEh07w_000000_000010"
    clip, _, meta = ds[1]  # found flat in the root
    assert meta["path"].endswith("SOX5yA1l24A_000299_000309.mp4")
    with pytest.raises(VideoError, match="video 'WUzgd7C1pWA_000101_000111' not found"):
        ds[2]
    ds.on_error = "skip"
    with caplog.at_level(logging.WARNING):
        clip, label, meta = ds[2]
    assert meta["id"] != "WUzgd7C1pWA_000101_000111" and ds.failures == 1
    assert "WUzgd7C1pWA" in caplog.text
    mapped = KineticsDataset(K400 / "k400_val_sample.csv", K400, label_map=K400 / "label_map_k400.txt")
    assert mapped.index[0].label == mapped.classes.index("using segway") == 375


def test_ssv2_templates_labels_and_test_split():
    ds = SomethingSomethingV2(SSV2 / "validation.json", SSV2 / "labels.json", SSV2 / "videos", sampler=segments())
    assert [r.label for r in ds.index] == [5, 41, 5]
    assert ds.classes[41] == "Moving something away from the camera"
    clip, label, meta = ds[1]
    assert clip.shape == (1, 4, 240, 427, 3) and label == 41 and meta["id"] == "100041"
    test = SomethingSomethingV2(SSV2 / "test.json", SSV2 / "labels.json", SSV2 / "videos")
    assert [r.label for r in test.index] == [-1, -1]


def test_ssv1_frame_folders(tmp_path):
    from torchvision.io import encode_jpeg

    frames = read_frames(SSV2 / "videos" / "100005.webm", list(range(0, 40, 2)))
    for vid in ("1001", "1002"):
        (tmp_path / vid).mkdir()
        for i, f in enumerate(frames):
            jpg = encode_jpeg(f.permute(2, 0, 1)).numpy().tobytes()
            (tmp_path / vid / f"{i + 1:05d}.jpg").write_bytes(jpg)
    (tmp_path / "val.csv").write_text("1001;Closing something\n1002;Pushing something from left to right\n")
    ds = SomethingSomethingV1(tmp_path / "val.csv", DATA / "sthv1" / "labels.csv", tmp_path, sampler=segments(n=8))
    assert [r.label for r in ds.index] == [11, 30]
    clip, label, _ = ds[0]
    assert clip.shape == (1, 8, 240, 427, 3) and label == 11
    assert detect_format(tmp_path / "val.csv") == "ssv1"


def test_list_file_for_any_dataset(tmp_path):
    (tmp_path / "list.txt").write_text("videos/100005.webm 3\nvideos/100041.webm 7\n")
    ds = VideoListDataset(tmp_path / "list.txt", SSV2, sampler=segments())
    assert len(ds) == 2 and ds[1][1] == 7
    assert detect_format(tmp_path / "list.txt") == "list"
    for bad in ("a b c d\n", "my video.webm 3\n", "videos/x.webm three\n"):
        (tmp_path / "bad.txt").write_text("videos/100005.webm 3\n" + bad)
        with pytest.raises(DataError, match="bad.txt, line 2: expected 'path label'"):
            VideoListDataset(tmp_path / "bad.txt", SSV2)


def test_list_labels_are_checked_against_the_class_list_and_absolute_paths_are_kept(tmp_path):
    video = (SSV2 / "videos" / "100005.webm").resolve()
    (tmp_path / "list.txt").write_text(f"{video} 1\nvideos/100041.webm 2\n")  # one absolute path, one relative
    ds = VideoListDataset(tmp_path / "list.txt", SSV2, classes=["a", "b", "c"], sampler=segments())
    assert ds[0][2]["path"] == str(video) and ds[1][1] == 2
    with pytest.raises(DataError, match=r"list.txt, line 2: label 2 is outside the class list \(2 classes, 0 to 1\)"):
        VideoListDataset(tmp_path / "list.txt", SSV2, classes=["a", "b"])


def test_kinetics_csv_blank_lines_are_skipped_and_bad_rows_named(tmp_path, caplog):
    header, *rows = (K400 / "k400_val_sample.csv").read_text().splitlines()
    (tmp_path / "blank.csv").write_text("\n".join([header, rows[0], "", rows[1], ",,,,,", ""]) + "\n")
    with caplog.at_level(logging.INFO):
        ds = KineticsDataset(tmp_path / "blank.csv", K400)
    assert [r.label for r in ds.index] == [0, 0] and "3 blank lines skipped" in caplog.text
    (tmp_path / "short.csv").write_text("\n".join([header, rows[0], '"using segway",R6llTwEh07w,0']) + "\n")
    with pytest.raises(DataError, match=r"short.csv, line 3: 3 fields where the header has 6"):
        KineticsDataset(tmp_path / "short.csv", K400)
    (tmp_path / "times.csv").write_text("\n".join([header, '"using segway",R6llTwEh07w,zero,10,val,0']) + "\n")
    with pytest.raises(DataError, match=r"times.csv, line 2: time_start and time_end must be numbers, got 'zero'"):
        KineticsDataset(tmp_path / "times.csv", K400)


def test_train_pipeline_shapes_and_multi_view_testing():
    train = build_transform(True, size=112, flip=False)
    ds = SomethingSomethingV2(
        SSV2 / "validation.json", SSV2 / "labels.json", SSV2 / "videos", sampler=segments(True, 8), transform=train
    )
    clip, _, _ = ds[0]
    assert clip.shape == (1, 3, 8, 112, 112) and clip.dtype == torch.uint8 and clip.is_contiguous()
    test = build_transform(False, size=112, scale_size=112, test_crops=3)
    ds = SomethingSomethingV2(
        SSV2 / "validation.json", SSV2 / "labels.json", SSV2 / "videos", sampler=segments(False, 8, 2), transform=test
    )
    clip, _, _ = ds[0]
    assert clip.shape == (2 * 3, 3, 8, 112, 112)  # 2 clips x 3 crops


@pytest.mark.parametrize("train", [False, True])
def test_a_one_clip_item_equals_its_clip_transformed_where_a_short_video_repeats_frames(train):
    """A one-clip item transforms its distinct frames once and repeats them after; the result is
    the clip of repeated frames transformed (every transform acts per frame, one draw a clip)."""
    import numpy as np

    from seqctx.video.data import open_video

    sampler = build_sampler("dense", train=train, num_segments=64, frame_interval=1)
    transform = build_transform(train, size=112, scale_size=128, flip=True)
    ds = SomethingSomethingV2(SSV2 / "validation.json", SSV2 / "labels.json", SSV2 / "videos", sampler=sampler,
                              transform=transform, on_error="raise")  # fmt: skip
    clip, _, _ = ds[0]
    source = open_video(ds.path(0))
    rng = np.random.default_rng([ds.seed, ds.epoch, 0])
    (indices,) = sampler(source.num_frames, rng=rng)
    assert len(set(indices)) < len(indices)  # 64 frames of a shorter video: it loops, repeating frames
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(rng.integers(2**62)))
        expected = transform(source.read(indices))
    assert clip.shape == (1, 3, 64, 112, 112) and torch.equal(clip, expected)


def test_bad_videos_never_kill_an_epoch_with_workers(tmp_path):
    root = tmp_path / "videos"
    root.mkdir()
    shutil.copy(SSV2 / "videos" / "100005.webm", root / "good.webm")
    (root / "empty.webm").touch()
    (root / "corrupt.webm").write_bytes(b"\x1aE\xdf\xa3" + b"\x00junk" * 200)
    data = (SSV2 / "videos" / "100041.webm").read_bytes()
    (root / "truncated.webm").write_bytes(data[: len(data) // 4])
    names = ["good", "empty", "corrupt", "missing", "truncated"]
    (tmp_path / "list.txt").write_text("".join(f"videos/{n}.webm {i}\n" for i, n in enumerate(names)))
    ds = VideoListDataset(
        tmp_path / "list.txt", tmp_path, sampler=segments(True, 8), transform=build_transform(True, 64)
    )
    loader = DataLoader(ds, batch_size=5, num_workers=2)
    clips, labels, meta = next(iter(loader))
    assert clips.shape == (5, 1, 3, 8, 64, 64)
    assert ds.failures >= 3  # counted across worker processes
    strict = VideoListDataset(tmp_path / "list.txt", tmp_path, on_error="raise")
    with pytest.raises(VideoError, match="empty.webm: the file is empty"):
        strict[1]
    with pytest.raises(VideoError, match="corrupt.webm"):
        strict[2]


def test_build_dataset_detects_formats_and_needs_labels():
    assert detect_format(K400 / "k400_val_sample.csv") == "kinetics"
    ds = build_dataset(SSV2 / "validation.json", SSV2 / "videos", SSV2 / "labels.json")
    assert isinstance(ds, SomethingSomethingV2)
    with pytest.raises(ValueError, match="needs its labels file"):
        build_dataset(SSV2 / "validation.json", SSV2 / "videos")
    with pytest.raises(ValueError, match="on_error must be one of"):
        build_dataset(SSV2 / "validation.json", SSV2 / "videos", SSV2 / "labels.json", on_error="ignore")
    entries = json.loads((SSV2 / "validation.json").read_text())
    assert len(ds) == len(entries)


@pytest.mark.parametrize("views", [None, 3])
def test_normalize_clips_is_the_imagenet_formula(views):
    from seqctx.video.data import normalize_clips
    from seqctx.video.data.transforms import IMAGENET_MEAN, IMAGENET_STD, to_tchw, to_views

    torch.manual_seed(0)
    frames = torch.randint(0, 256, (8, 20, 24, 3), dtype=torch.uint8)  # decoded (T, H, W, C)
    clip = to_tchw(frames)  # a channels-last view, as the pipeline sees it
    clip = torch.stack([clip] * views) if views else clip.unsqueeze(0)  # (V, T, C, H, W)
    batch = to_views(clip).unsqueeze(0)  # what the loader gives: uint8 (N, V, C, T, H, W)
    assert batch.dtype == torch.uint8 and batch.is_contiguous()
    out = normalize_clips(batch)
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)
    ref = (clip.transpose(-4, -3).double() / 255 - mean.double()) / std.double()  # (..., C, T, H, W)
    assert out.dtype == torch.float32 and out.shape == (1, *ref.shape)
    torch.testing.assert_close(out[0].double(), ref, rtol=0, atol=2e-6)
    from seqctx.video.data import fold_views

    flat, v = fold_views(batch, torch.device("cpu"))  # the model's batch: views folded in
    assert v == ref.shape[0] and torch.equal(flat, out.flatten(0, 1))
