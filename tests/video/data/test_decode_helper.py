"""The decode helper is stateless and thread-safe: each caller gets its own video's frames through
interleaved opens, a helper restart, an interrupted call and two threads at once; a helper forked
from a thread outlives that thread; helpers are reaped."""

import ctypes
import os
import signal
import threading
from pathlib import Path

import pytest
import torch

from seqctx.video.data import VideoError, guarded
from seqctx.video.data.backends.decord import DecordSource
from seqctx.video.data.decode import open_video
from seqctx.video.data.guarded import open_guarded, stop_helper
from tests.procs import processes

DATA = Path(__file__).parents[2] / "data"
A = DATA / "kinetics" / "SOX5yA1l24A_000299_000309.mp4"
B = DATA / "kinetics" / "pancake.mkv"
FRAMES = [0, 5, 9]


def truth(path):
    return open_video(path, "decord", 1, 64).decode(FRAMES)


def guarded_source(path, timeout=30.0):
    return open_guarded(path, timeout, backend="decord", short_side=64)


@pytest.fixture(autouse=True)
def fresh_helper():
    stop_helper()
    yield
    stop_helper()


def zombies_of(pid):
    return [p.pid for p in processes() if p.ppid == pid and p.state == "Z"]


def test_interleaved_sources_and_a_restart_each_get_their_own_frames():
    a, b = guarded_source(A), guarded_source(B)  # opened one after the other
    assert torch.equal(a.decode(FRAMES), truth(A))  # before: B's frames (the helper kept the last open)
    assert torch.equal(b.decode(FRAMES), truth(B))
    first = guarded._HELPER.pid
    stop_helper()  # a restart between open and decode (after a timeout or a crash elsewhere)
    assert torch.equal(a.decode(FRAMES), truth(A))  # before: AssertionError
    assert guarded._HELPER.pid not in (0, first)
    assert zombies_of(os.getpid()) == []  # the stopped helper was reaped


def test_an_interrupted_call_leaves_nothing_for_the_next_caller(monkeypatch):
    real = DecordSource.decode

    def slow(self, unique):
        if Path(self.path).name == A.name:
            ctypes.CDLL(None).usleep(500_000)  # 0.5 s in native code
        return real(self, unique)

    monkeypatch.setattr(DecordSource, "decode", slow)
    a, b = guarded_source(A), guarded_source(B)

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)  # arrives between the request and its answer
        with pytest.raises(KeyboardInterrupt):
            a.decode(FRAMES)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    # before: B was answered with A's late reply (counted unreadable), then an UnpicklingError
    assert torch.equal(b.decode(FRAMES), truth(B))
    assert torch.equal(a.decode(FRAMES), truth(A))


def test_two_threads_at_once_each_get_their_own_video():
    expected = {A: truth(A), B: truth(B)}
    errors, done = [], []

    def reader(path):
        try:
            for _ in range(6):
                source = guarded_source(path)
                assert torch.equal(source.decode(FRAMES), expected[path])
            done.append(path)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=reader, args=(p,)) for p in (A, B, A, B)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(done) == 4


def test_a_helper_started_by_a_thread_that_ended_serves_the_others():
    out = []
    t = threading.Thread(target=lambda: out.append(guarded_source(A).decode(FRAMES)))
    t.start()
    t.join()  # the thread that first used the helper is gone (PR_SET_PDEATHSIG is per thread)
    assert torch.equal(out[0], truth(A))
    assert torch.equal(guarded_source(B).decode(FRAMES), truth(B))  # before: the helper had died with the thread


def test_a_failure_names_the_video_and_the_helper_goes_on(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(VideoError, match="broken.mp4"):
        guarded_source(bad)
    assert torch.equal(guarded_source(A).decode(FRAMES), truth(A))


def test_frames_come_back_through_a_shared_file_that_follows_the_answers_size():
    """An answer larger than the shared file brings a new one, as does one under a quarter of it;
    answers that fit reuse it; every answer is the plain decode's, and a copy the caller keeps
    is not overwritten by the next answer."""
    source = guarded_source(A)
    few = source.decode([3])
    first = guarded._HELPER.shared
    assert torch.equal(few, open_video(A, "decord", 1, 64).decode([3]))
    many = list(range(0, 40, 2))
    frames = source.decode(many)  # 20x the bytes: a new file
    assert guarded._HELPER.shared is not first and guarded._HELPER.shared.size >= frames.numel()
    assert torch.equal(frames, open_video(A, "decord", 1, 64).decode(many))
    grown = guarded._HELPER.shared
    again = source.decode(many[1:])  # fits: the same file
    assert guarded._HELPER.shared is grown and torch.equal(again, frames[1:])
    assert torch.equal(source.decode([3]), few) and guarded._HELPER.shared is not grown  # under a quarter
    assert torch.equal(frames, open_video(A, "decord", 1, 64).decode(many))  # the kept copy is intact


def test_without_memory_files_the_frames_come_through_an_unlinked_file(monkeypatch):
    """Where the system has no ``memfd_create`` (macOS), the shared file is a temporary file."""
    monkeypatch.delattr(os, "memfd_create")
    stop_helper()  # the next helper is forked without it
    assert torch.equal(guarded_source(A).decode(FRAMES), truth(A))
    assert torch.equal(guarded_source(B).decode(FRAMES), truth(B))
