"""A decoder that hangs in native code never stalls a run, and an item is decoded once.

The hang is real native code: ``sleep`` from the C library through ctypes, which no Python
exception or signal handler interrupts from inside, as decord's spinning ``get_batch``
(dmlc/decord#373)."""

import ctypes
import shutil
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from seqctx.video.data import (
    VideoError,
    VideoListDataset,
    build_sampler,
    build_transform,
    collate_clips,
    guarded,
)
from seqctx.video.data.backends.decord import DecordSource
from seqctx.video.data.check import check_dataset, format_report

DATA = Path(__file__).parents[2] / "data"
MP4 = DATA / "kinetics" / "SOX5yA1l24A_000299_000309.mp4"


@pytest.fixture
def videos(tmp_path):
    for name in ("a", "hang", "c"):
        shutil.copy(MP4, tmp_path / f"{name}.mp4")
    (tmp_path / "list.txt").write_text("a.mp4 0\nhang.mp4 1\nc.mp4 2\n")
    return tmp_path


@pytest.fixture
def hanging_decord(monkeypatch):
    """decord's decode blocks in C for 1000 s on any file named hang.mp4; the helper process is
    restarted so that it has the patch (it is forked from this process)."""
    real = DecordSource.decode

    def blocking(self, unique):
        if Path(self.path).name == "hang.mp4":
            ctypes.CDLL(None).sleep(1000)
        return real(self, unique)

    guarded.stop_helper()
    monkeypatch.setattr(DecordSource, "decode", blocking)
    yield
    guarded.stop_helper()


def dataset(root, on_error, timeout=2.0):
    return VideoListDataset(
        root / "list.txt", root, sampler=build_sampler("segments", train=False, num_segments=4),
        transform=build_transform(False, size=64, scale_size=64), on_error=on_error, decode_timeout=timeout,
        short_side=64, backend="decord",  # the decoder with the hang (dmlc/decord#373)
    )  # fmt: skip


@pytest.mark.parametrize("workers", [0, 2])
def test_evaluation_leaves_a_hanging_video_out_and_reports_it(videos, hanging_decord, workers):
    reference = dataset(videos, "drop", timeout=None)
    expected = {0: reference[0][0], 2: reference[2][0]}  # decoded in this process, never reaching the hang
    loader = DataLoader(dataset(videos, "drop"), batch_size=3, num_workers=workers, collate_fn=collate_clips)
    (clips, labels, meta), = list(loader)  # fmt: skip
    assert meta["id"] == ["a.mp4", "c.mp4"] and labels.tolist() == [0, 2]
    (failed_id, reason), = meta["failed"]  # fmt: skip
    assert failed_id == "hang.mp4" and "longer than 2 s (data.decode_timeout)" in reason
    assert torch.equal(clips[0], expected[0]) and torch.equal(clips[1], expected[2])  # the others are untouched


@pytest.mark.parametrize("workers", [0, 2])
def test_training_replaces_a_hanging_video_and_goes_on(videos, hanging_decord, workers):
    train = dataset(videos, "replace")
    loader = DataLoader(train, batch_size=3, num_workers=workers, collate_fn=collate_clips)
    (clips, labels, meta), = list(loader)  # fmt: skip
    replacement = (1 + 7919) % 3  # the dataset's deterministic replacement for item 1
    assert meta["index"].tolist() == [0, replacement, 2] and clips.shape[0] == 3
    assert torch.equal(clips[1], dataset(videos, "drop", timeout=None)[replacement][0])
    with pytest.raises(VideoError, match=r"hang\.mp4: decoding took longer than 2 s"):
        dataset(videos, "raise")[1]
    assert dataset(videos, "raise")[2][1] == 2  # a new helper reads the next video


def test_data_check_reports_a_hanging_video_and_inexact_random_access(videos, hanging_decord, monkeypatch):
    statuses = check_dataset(dataset(videos, "drop"), progress=False, exact=True)
    assert [s.status for s in statuses] == ["ok", "unreadable", "ok"]
    assert "decode_timeout" in statuses[1].reason and statuses[0].access == "seek"
    # A backend whose seeking returns the neighbour of each frame is listed as inexact.
    real = DecordSource.decode
    monkeypatch.setattr(DecordSource, "decode", lambda self, u: real(self, [max(i - 1, 0) for i in u])
                        if self.access == "seek" else real(self, u))  # fmt: skip
    (videos / "list.txt").write_text("a.mp4 0\n")
    (status,) = check_dataset(dataset(videos, "drop", timeout=None), progress=False, exact=True)
    assert status.status == "inexact" and "returns other frames than a sequential decode at [1, 110" in status.reason
    assert "1 inexact" in format_report([status])


def test_a_multi_clip_item_is_decoded_once(videos, monkeypatch):
    calls = []
    real = DecordSource.decode
    monkeypatch.setattr(DecordSource, "decode", lambda self, u: calls.append(len(u)) or real(self, u))
    ds = VideoListDataset(
        videos / "list.txt", videos, sampler=build_sampler("dense", train=False, num_segments=8, num_clips=10),
        transform=build_transform(False, size=64, scale_size=64, test_crops=3), on_error="raise", short_side=64,
        backend="decord",
    )  # fmt: skip
    views, _, _ = ds[0]
    assert views.shape == (30, 3, 8, 64, 64) and len(calls) == 1 and calls[0] <= 80
