"""The annotation index at the size users train at: one class list per run, repeated ids refused,
BOM-safe files, every Kinetics layout found once, no per-video Python objects."""

import gc
import json
import shutil
from pathlib import Path

import pytest
import torch

from seqctx.errors import DataError
from seqctx.video.data import (
    KineticsDataset,
    SomethingSomethingV2,
    VideoError,
    VideoListDataset,
    build_dataset,
    build_sampler,
)

DATA = Path(__file__).parents[2] / "data"
CLIP = DATA / "kinetics" / "val" / "using segway" / "R6llTwEh07w_000000_000010.mp4"
SSV2 = DATA / "ssv2"
HEADER = "label,youtube_id,time_start,time_end,split,is_cc\n"


def kinetics_csv(path: Path, rows: list[tuple[str, str]], bom: bool = False) -> Path:
    """``rows`` of (label, youtube_id), 10 s from 0, split ``val``."""
    text = HEADER + "".join(f'"{label}",{yid},0,10,val,0\n' for label, yid in rows)
    path.write_bytes(("\ufeff" if bom else "").encode() + text.encode())
    return path


def test_a_split_missing_a_class_keeps_the_runs_indices(tmp_path):
    train = KineticsDataset(kinetics_csv(tmp_path / "train.csv", [("a", "x1"), ("b", "x2"), ("c", "x3")]), tmp_path)
    val_csv = kinetics_csv(tmp_path / "val.csv", [("a", "y1"), ("c", "y3")])  # no video of "b"
    assert train.classes == ["a", "b", "c"]
    val = KineticsDataset(val_csv, tmp_path, classes=train.classes)
    assert [r.label for r in val.index] == [0, 2]  # "c" stays 2, not the second class of this file
    alone = KineticsDataset(val_csv, tmp_path)  # a training annotation decides its own list: sorted names
    assert alone.classes == ["a", "c"]
    kinetics_csv(tmp_path / "new.csv", [("a", "z1"), ("d", "z4")])
    with pytest.raises(DataError, match=r"new\.csv, line 3: label 'd' is not in the run's class list \(3 classes\)"):
        build_dataset(tmp_path / "new.csv", tmp_path, classes=train.classes)


def test_repeated_videos_are_refused_at_load_naming_them(tmp_path):
    csv = kinetics_csv(tmp_path / "dup.csv", [("a", "x1"), ("b", "x2"), ("a", "x1")])
    with pytest.raises(DataError, match=r"1 video\(s\) listed more than once \('x1_000000_000010' on lines 2, 4\)"):
        KineticsDataset(csv, tmp_path)
    (tmp_path / "list.txt").write_text("a.mp4 0\nb.mp4 1\n\na.mp4 1\n")
    with pytest.raises(DataError, match=r"list\.txt: 1 video\(s\) listed more than once \('a\.mp4' on lines 1, 4\)"):
        VideoListDataset(tmp_path / "list.txt", tmp_path)
    entries = json.loads((SSV2 / "validation.json").read_text())
    (tmp_path / "val.json").write_text(json.dumps(entries + entries[:1]))
    with pytest.raises(DataError, match="listed more than once"):
        SomethingSomethingV2(tmp_path / "val.json", SSV2 / "labels.json", SSV2 / "videos")


def test_annotations_with_a_byte_order_mark(tmp_path):
    csv = kinetics_csv(tmp_path / "bom.csv", [("a", "x1"), ("b", "x2")], bom=True)
    assert [r.label for r in KineticsDataset(csv, tmp_path).index] == [0, 1]
    assert build_dataset(csv, tmp_path).classes == ["a", "b"]  # the format is detected through the BOM
    (tmp_path / "map.txt").write_text("\ufeffb\na\n")
    assert [r.label for r in KineticsDataset(csv, tmp_path, label_map=tmp_path / "map.txt").index] == [1, 0]
    (tmp_path / "val.json").write_text("\ufeff" + (SSV2 / "validation.json").read_text())
    (tmp_path / "labels.json").write_text("\ufeff" + (SSV2 / "labels.json").read_text())
    ds = SomethingSomethingV2(tmp_path / "val.json", tmp_path / "labels.json", SSV2 / "videos")
    assert [r.label for r in ds.index] == [5, 41, 5]
    (tmp_path / "list.txt").write_text("\ufeffvideos/100005.webm 3\n")
    ds = VideoListDataset(tmp_path / "list.txt", SSV2)
    assert ds.index[0].id == "videos/100005.webm" and ds.path(0) == SSV2 / "videos" / "100005.webm"


@pytest.mark.parametrize(
    "layout",
    ["val/using segway/{id}.mp4", "val/{id}.mkv", "using segway/{id}.webm", "{id}.mp4", "{yid}.avi"],
)
def test_every_kinetics_layout_is_found_once_and_items_are_the_videos(tmp_path, layout):
    yid, vid = "R6llTwEh07w", "R6llTwEh07w_000000_000010"
    target = tmp_path / "root" / layout.format(id=vid, yid=yid)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(CLIP, target)
    csv = kinetics_csv(tmp_path / "k.csv", [("using segway", yid), ("using segway", "absentvideo")])
    sampler = build_sampler("segments", train=False, num_segments=4)
    ds = KineticsDataset(csv, tmp_path / "root", sampler=sampler)
    ds.check_found()
    assert ds.path(0) == target
    shutil.copy(CLIP, tmp_path / f"reference{target.suffix}")
    (tmp_path / "list.txt").write_text(f"reference{target.suffix} 0\n")
    reference = VideoListDataset(tmp_path / "list.txt", tmp_path, sampler=sampler)
    assert torch.equal(ds[0][0], reference[0][0])  # the same frames as the file named directly
    with pytest.raises(VideoError, match=r"video 'absentvideo_000000_000010' not found \(looked for .*absentvideo"):
        ds.path(1)


def test_a_wrong_root_says_where_it_looked_and_long_names_are_not_a_crash(tmp_path):
    long_id = "v" * 250  # a legal file name near 255 bytes: with _start_end appended it cannot exist
    csv = kinetics_csv(tmp_path / "k.csv", [("a", long_id)])
    ds = KineticsDataset(csv, tmp_path / "nowhere")
    with pytest.raises(VideoError, match="not found"):
        ds.path(0)
    with pytest.raises(DataError, match=r"none of the first 1 videos .* looked for .*nowhere/val/a/vvv"):
        ds.check_found()


def test_the_index_holds_no_python_object_per_video(tmp_path):
    rows = [(f"class {i % 400}", f"{i:011d}") for i in range(50_000)]
    csv = kinetics_csv(tmp_path / "big.csv", rows)
    gc.collect()
    before = len(gc.get_objects())
    ds = KineticsDataset(csv, tmp_path)
    gc.collect()
    assert len(gc.get_objects()) - before < 2_000  # the class names and a few arrays, not 50k records
    assert ds.index.nbytes < 50_000 * 50  # 25-byte ids, offsets, labels, frame counts, groups: 43 bytes a video
    assert ds.index[49_999].id == "00000049999_000000_000010" and ds.fields(7)["label"] == "class 7"
