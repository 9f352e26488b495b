"""WebDataset shards made by `data prepare --shards` from the repository's real clips: every
backend reads a sample from memory exactly as from the prepared file; deterministic and resumable
writing; every sample once per epoch over uneven shards dealt to 2 ranks x 2 (and 5) loader
workers; a truncated shard, a missing shard and a sample that does not decode are named and the
readable samples read."""

import hashlib
import json
import shutil
import tarfile
from pathlib import Path

import pytest
import torch

from seqctx.cli import main
from seqctx.errors import DataError
from seqctx.stopping import make_loader
from seqctx.video.data import build_dataset
from seqctx.video.data.decode import installed_backends, open_video
from seqctx.video.data.shards import ShardDataset, ShardIndex, epoch_order, parse_size
from seqctx.video.engine.builders import EpochSampler

DATA = Path(__file__).resolve().parents[2] / "data"
CLIPS = [  # (path under tests/data, label)
    ("kinetics/SOX5yA1l24A_000299_000309.mp4", 0),
    ("kinetics/pancake.mkv", 1),
    ("ssv2/videos/100005.webm", 2),
    ("ssv2/videos/100041.webm", 0),
]


def prepare_real(tmp_path: Path, out: Path, *extra: str) -> Path:
    (tmp_path / "labels.txt").write_text("jumping\npancakes\npushing\n")
    (tmp_path / "clips.txt").write_text("".join(f"{p} {label}\n" for p, label in CLIPS))
    args = ["data", "prepare", str(tmp_path / "clips.txt"), "--root", str(DATA), "--out", str(out)]
    assert main([*args, "--labels", str(tmp_path / "labels.txt"), "--short-side", "64", "--shards", *extra]) == 0
    return out / "shards" / "clips" / "index.json"


@pytest.fixture(scope="module")
def real_shards(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("real")
    return prepare_real(tmp, tmp / "out", "--shard-size", "100K")


def test_sizes_are_read_with_their_suffixes():
    assert [parse_size(s) for s in ("100K", "500M", "1G", "1.5G", "4096", "2MB")] == [
        100 * 1024, 500 * 2**20, 2**30, 3 * 2**29, 4096, 2 * 2**20,
    ]  # fmt: skip
    with pytest.raises(ValueError, match=r"got '1X'"):
        parse_size("1X")


def test_shards_hold_the_prepared_clips_and_an_index_that_names_them(real_shards):
    index = ShardIndex.load(str(real_shards))
    out = real_shards.parents[2]
    assert index.classes == ["jumping", "pancakes", "pushing"]
    assert list(index.samples["id"]) == [p for p, _ in CLIPS]
    assert index.samples["label"].tolist() == [label for _, label in CLIPS]
    assert index.settings == {"short_side": 64, "keyint": 16, "crf": 18, "format": "mp4", "shard_size": 100 * 1024}
    assert len(index.shards) >= 3 and sum(s["samples"] for s in index.shards) == len(CLIPS)
    for k, (path, _) in enumerate(CLIPS):
        shard = real_shards.parent / index.shards[int(index.samples["shard"][k])]["name"]
        with tarfile.open(shard) as tar:  # WebDataset's layout: <key>.mp4 and <key>.json
            meta = json.loads(tar.extractfile(f"{k:08d}.json").read())
            data = tar.extractfile(f"{k:08d}.mp4").read()
        prepared = (out / path).with_suffix(".mp4")
        assert data == prepared.read_bytes()
        assert meta["id"] == path and meta["label"] == index.classes[CLIPS[k][1]]
        assert meta["frames"] == int(index.samples["frames"][k]) == open_video(prepared).num_frames
        assert meta["fps"] > 0


@pytest.mark.parametrize("backend", installed_backends())
def test_every_backend_reads_a_sample_from_memory_exactly_as_the_prepared_file(real_shards, backend):
    dataset = ShardDataset(str(real_shards), backend=backend, decode_timeout=None)
    out = real_shards.parents[2]
    for k, (path, _) in enumerate(CLIPS):
        blob = dataset.path(k)
        shard = dataset.shards.shards[int(dataset.shards.samples["shard"][k])]["name"]
        assert str(blob) == f"{real_shards.parent}/{shard}#{path}"
        from_memory, from_file = open_video(blob, backend), open_video((out / path).with_suffix(".mp4"), backend)
        assert from_memory.num_frames == from_file.num_frames
        indices = sorted({0, 3, from_file.num_frames // 2, from_file.num_frames - 1})
        assert torch.equal(from_memory.read(indices), from_file.read(indices))


def test_the_same_clips_give_the_same_shards_and_a_rerun_mends_a_missing_one(tmp_path, real_shards):
    out = tmp_path / "out"
    shutil.copytree(real_shards.parents[2], out)  # the prepared clips, as a rerun finds them
    again = out / "shards" / "clips" / "index.json"

    def digests(folder):
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}

    shutil.rmtree(again.parent)
    prepare_real(tmp_path, out, "--shard-size", "100K")  # the clips skipped, the shards written anew
    assert json.loads(again.read_text()) == json.loads(real_shards.read_text())  # the index's fields, named
    assert digests(again.parent) == digests(real_shards.parent)  # byte for byte
    sorted(again.parent.glob("*.tar"))[1].unlink()
    prepare_real(tmp_path, out, "--shard-size", "100K")
    assert digests(again.parent) == digests(real_shards.parent)
    # another shard size: other shards, the old ones gone, the index says which
    prepare_real(tmp_path, out, "--shard-size", "1G")
    assert [p.name for p in sorted(again.parent.glob("*.tar"))] == ["clips-000000.tar"]
    assert ShardIndex.load(str(again)).shards[0]["samples"] == len(CLIPS)


def test_frames_and_shards_together_are_refused(tmp_path, capsys):
    (tmp_path / "clips.txt").write_text(f"{CLIPS[0][0]} 0\n")
    args = ["data", "prepare", str(tmp_path / "clips.txt"), "--root", str(DATA), "--out", str(tmp_path / "out")]
    assert main([*args, "--frames", "--shards"]) == 2
    assert "--shards packs MP4 copies; drop --frames" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main([*args, "--shards", "--shard-size", "0"])
    assert usage.value.code == 2
    assert "argument --shard-size: a size is a positive number of bytes" in capsys.readouterr().err


def test_the_epoch_order_keeps_shards_together_and_moves_samples_within_the_buffer():
    sizes = [5, 5, 2]
    order = epoch_order(sizes, torch.Generator().manual_seed(0), buffer=1)
    shards = [0] * 5 + [1] * 5 + [2] * 2
    runs = [shards[i] for i in order]
    assert sorted(order) == list(range(12)) and sum(a != b for a, b in zip(runs, runs[1:], strict=False)) == 2
    shuffled = epoch_order(sizes, torch.Generator().manual_seed(0), buffer=4)
    assert sorted(shuffled) == list(range(12))
    assert all(sorted(shuffled[k : k + 4]) == sorted(order[k : k + 4]) for k in range(0, 12, 4))
    assert shuffled != order


def uneven_shards(synth: Path, out: Path) -> Path:
    """The synthetic training set (12 clips) prepared into 3 shards of 5, 5 and 2 clips."""
    assert main(["data", "prepare", str(synth / "train.json"), "--root", str(synth / "videos"), "--labels",
                 str(synth / "labels.json"), "--out", str(out), "--short-side", "32"]) == 0  # fmt: skip
    sizes = sorted(p.stat().st_size for p in out.glob("*.mp4"))
    size = sum(sizes[-5:])  # any 5 clips fit, no 6
    assert main(["data", "prepare", str(synth / "train.json"), "--root", str(synth / "videos"), "--labels",
                 str(synth / "labels.json"), "--out", str(out), "--short-side", "32", "--shards", "--shard-size",
                 str(size)]) == 0  # fmt: skip
    return out / "shards" / "train" / "index.json"


@pytest.mark.filterwarnings("ignore:This DataLoader will create 5 worker processes")
@pytest.mark.parametrize("workers", [2, 5])
def test_every_sample_once_per_epoch_over_two_ranks_and_their_workers(synth, tmp_path, workers):
    index = uneven_shards(synth, tmp_path / "out")
    dataset = build_dataset(str(index), "", decode_timeout=None, shuffle_buffer=3)
    counts = [s["samples"] for s in dataset.shards.shards]
    assert len(counts) == 3 and len(set(counts)) > 1  # uneven
    for epoch in (0, 1):
        seen = []
        for rank in (0, 1):
            sampler = EpochSampler(len(dataset), shuffle=True, seed=7, rank=rank, world=2, batch_size=2,
                                   order=dataset.shuffled)  # fmt: skip
            sampler.set_epoch(epoch)
            loader = make_loader(dataset, num_workers=workers, sampler=sampler, batch_size=2, collate_fn=lambda b: b)
            seen += [meta["id"] for batch in loader for _, _, meta in batch]
        assert sorted(seen) == sorted(dataset.index.ids), f"epoch {epoch}"
    assert dataset.failures == 0


def test_a_truncated_shard_reads_its_whole_samples_and_names_the_rest(synth, tmp_path, caplog):
    index = uneven_shards(synth, tmp_path / "out")
    shards = ShardIndex.load(str(index))
    first = index.parent / shards.shards[0]["name"]
    cut = int(shards.samples["offset"][2]) + 10  # in the middle of the third sample's video
    first.write_bytes(first.read_bytes()[:cut])
    dataset = build_dataset(str(index), "", decode_timeout=None, on_error="drop")
    items = [dataset[i] for i in range(len(dataset))]
    failed = [meta for clip, _, meta in items if clip is None]
    assert [m["index"] for m in failed] == [2, 3, 4]  # the samples the cut reaches; shards 2 and 3 read whole
    assert "is cut short (the sample is bytes" in failed[0]["error"]
    assert dataset.failures == 3
    # a missing shard, and a sample whose bytes are not a video: named per sample, the rest read
    (index.parent / shards.shards[2]["name"]).unlink()
    second = index.parent / shards.shards[1]["name"]
    data = bytearray(second.read_bytes())
    start = int(shards.samples["offset"][5])
    data[start : start + int(shards.samples["size"][5])] = b"\0" * int(shards.samples["size"][5])
    second.write_bytes(bytes(data))
    dataset = build_dataset(str(index), "", decode_timeout=None, on_error="drop")
    errors = {i: meta.get("error", "") for i, (_, _, meta) in enumerate(dataset[i] for i in range(len(dataset)))}
    assert [i for i, e in errors.items() if "not found" in e] == [10, 11]
    assert errors[5] and "cut short" not in errors[5] and not errors[6]


def test_an_index_that_is_not_one_and_a_missing_first_shard_are_named(synth, tmp_path):
    index = uneven_shards(synth, tmp_path / "out")
    with pytest.raises(DataError, match="not a shard index"):
        build_dataset(str(synth / "labels.json"), "", format="shards")
    # the index holds the class list: a config's data.labels (here a missing file) is not read
    dataset = build_dataset(str(index), "", labels=str(tmp_path / "gone.json"))
    assert dataset.classes == ShardIndex.load(str(index)).classes and len(dataset.classes) == 4
    moved = tmp_path / "moved" / "index.json"
    moved.parent.mkdir()
    shutil.copy(index, moved)
    with pytest.raises(DataError, match=r"the first shard of .*moved/index.json is not there"):
        build_dataset(str(moved), "").check_found()


def test_data_check_reads_a_shard_index_without_a_root(real_shards, tmp_path, capsys):
    assert main(["data", "check", str(real_shards), "--exact", "--min-frames", "1"]) == 0
    out = capsys.readouterr().out
    assert f"{len(CLIPS)} videos: {len(CLIPS)} ok, 0 missing, 0 unreadable, 0 too_short, 0 miscounted, 0 inexact" in out
    (tmp_path / "list.txt").write_text("a.mp4 0\n")
    assert main(["data", "check", str(tmp_path / "list.txt")]) == 2
    assert "--root is needed" in capsys.readouterr().err


def test_sigterm_while_shards_are_written_leaves_no_partial_shard(tmp_path, monkeypatch, capsys):
    import os
    import signal

    import webdataset

    write = webdataset.TarWriter.write
    calls = []

    def write_then_signal(self, sample):
        calls.append(sample["__key__"])
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler stops the job, mid-shard
        return write(self, sample)

    monkeypatch.setattr(webdataset.TarWriter, "write", write_then_signal)
    (tmp_path / "labels.txt").write_text("jumping\npancakes\npushing\n")
    (tmp_path / "clips.txt").write_text("".join(f"{p} {label}\n" for p, label in CLIPS))
    args = ["data", "prepare", str(tmp_path / "clips.txt"), "--root", str(DATA), "--out", str(tmp_path / "out"),
            "--labels", str(tmp_path / "labels.txt"), "--short-side", "64", "--shards"]  # fmt: skip
    assert main(args) == 143
    assert capsys.readouterr().err.strip().splitlines()[-1] == "seqctx: stopped by SIGTERM: data ended"
    folder = tmp_path / "out" / "shards" / "clips"
    assert not list(folder.glob("*.partial")) and not (folder / "index.json").exists()
    monkeypatch.undo()
    assert main(args) == 0 and ShardIndex.load(str(folder / "index.json")).shards[0]["samples"] == len(CLIPS)
