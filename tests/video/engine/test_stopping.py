"""Every stop is clean, with loader workers (``data.workers: 2``) and real signals to the whole
process group: during validation (also the last epoch's), a failed save, Ctrl-C, and the commands
that only read (``test``, ``predict``, ``demo``); a resume on another number of processes; a
non-finite loss. Each ends within seconds, leaves no process of its group behind, and a resumed
run equals one never stopped."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from seqctx.stopping import PREEMPTED_EXIT_CODE
from seqctx.video.engine import Trainer
from seqctx.video.engine import train as train_module
from seqctx.video.engine.builders import EpochSampler
from seqctx.video.engine.checkpoint import load_checkpoint
from seqctx.video.engine.config import save_config
from tests.procs import processes

from .runs import tiny_config, tiny_overrides
from .test_preemption import ENV, assert_same_weights, child_pids, cli, records, sets, trained_past, wait_for

DEMO_YAML = str(Path(train_module.__file__).parent / "demo_synthetic.yaml")
WORKERS = ["data.workers=2", "data.decode_timeout=60"]


def start(args, **kw):
    """A command in a process group of its own, as a shell, ``timeout`` or a scheduler start one."""
    return subprocess.Popen(args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kw)  # fmt: skip


def ended_cleanly(proc, timeout=30.0):
    """The command's (code, stderr) once it ended within ``timeout`` s, and no process of its group
    left (loader workers, decode helpers): the group is gone."""
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"the command did not end within {timeout} s after the signal (a hang)") from None
    deadline = time.monotonic() + 10
    while True:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, f"processes of the group are left: {group_members(proc.pid)}"
        time.sleep(0.05)
    return proc.returncode, err


def group_members(pgid):
    return [p for p in processes() if p.pgid == pgid]


def validating(proc, workers=2):
    """True while the run's main process has its validation loader's workers (beside the
    training loader's persistent ones)."""
    return lambda: len(child_pids(proc.pid)) >= 2 * workers


def strip(lines):
    return [{k: v for k, v in r.items() if k != "clips_per_s"} for r in lines]


@pytest.mark.parametrize("epoch", [2, 3], ids=["mid-run", "last-epoch"])
def test_sigterm_to_the_group_during_validation_exits_75_and_the_resume_equals_a_run_never_stopped(
    synth, tmp_path, epoch
):
    common = ["train.epochs=3", "train.eval_every=1", *WORKERS]
    full = tmp_path / "full"
    Trainer(tiny_config(synth, full, *common), progress=False).fit()
    run = tmp_path / "run"
    proc = start(cli("train", DEMO_YAML, *sets(tiny_overrides(synth, run, *common))))

    def in_validation_of_epoch():
        done = [r["epoch"] for r in records(run) if r["type"] == "epoch"] if (run / "metrics.jsonl").exists() else []
        return bool(done) and done[-1] == epoch and validating(proc)()

    wait_for(in_validation_of_epoch, proc)
    t0 = time.monotonic()
    os.killpg(proc.pid, signal.SIGTERM)
    code, err = ended_cleanly(proc)
    assert code == PREEMPTED_EXIT_CODE, err[-3000:]
    assert time.monotonic() - t0 < 20
    assert "(validation, redone on resume)" in err and "Traceback" not in err
    ckpt = load_checkpoint(run / "latest.pt")
    assert (ckpt["epoch"], ckpt["iteration"], ckpt["validated"]) == (epoch, 0, False)
    assert [r["epoch"] for r in records(run) if r["type"] == "val"] == list(range(1, epoch))
    done = subprocess.run(cli("train", str(run / "config.yaml"), "--work-dir", str(run), "--resume", "auto"),
                          env=ENV, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    # before: the epoch's val line was gone for good, and after the last epoch the run said it was finished
    assert strip(records(run)) == strip(records(full))
    assert_same_weights(full / "latest.pt", run / "latest.pt")
    assert_same_weights(full / "best.pt", run / "best.pt")
    assert (run / "accuracy.png").is_file() and load_checkpoint(run / "latest.pt")["validated"]


def test_a_failed_save_with_loader_workers_ends_with_its_message_and_no_process_left(synth, tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_config(synth, run, "train.epochs=1"), progress=False).fit()
    (run / "latest.pt.tmp").symlink_to("/dev/full")  # the next save runs into a full device: ENOSPC
    proc = start(cli("train", str(run / "config.yaml"), "--work-dir", str(run), "--resume", "auto",
                     *sets(["train.epochs=2", *WORKERS])))  # fmt: skip
    code, err = ended_cleanly(proc, timeout=120)  # before: the error line, then a wait for the workers for ever
    assert code == 2, err[-3000:]
    assert f"seqctx: error: could not write {run / 'latest.pt'}: No space left on device" in err
    assert "Traceback" not in err


def test_an_error_in_a_loader_worker_is_one_line_and_no_process_is_left(synth, tmp_path):
    first = sorted((synth / "videos").glob("*.mp4"))[0]
    lost = tmp_path / "lost.txt"  # one video, then 40 that are gone: a worker raises after 20 replacements
    lost.write_text(f"{first.name} 0\n" + "".join(f"gone_{i}.mp4 {i % 4}\n" for i in range(40)))
    (tmp_path / "val.txt").write_text(f"{first.name} 0\n")
    run = tmp_path / "run"
    proc = start(cli("train", DEMO_YAML, *sets(tiny_overrides(synth, run, *WORKERS, f"data.train_annotation={lost}",
                 f"data.val_annotation={tmp_path / 'val.txt'}", "data.format=list", "data.labels=null"))))  # fmt: skip
    code, err = ended_cleanly(proc, timeout=120)
    assert code == 2, err[-3000:]
    lines = err.strip().splitlines()
    assert lines[-1].startswith("seqctx: error: 20 videos in a row failed to load") and "Traceback" not in err
    assert "DataLoader worker" not in lines[-1]  # the worker's own traceback is cut to its message


def test_ctrl_c_with_loader_workers_ends_training_with_one_line(synth, tmp_path):
    run = tmp_path / "run"
    proc = start(cli("train", DEMO_YAML, *sets(tiny_overrides(synth, run, "train.epochs=200", *WORKERS))))
    wait_for(trained_past(run, 1), proc)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole foreground group
    code, err = ended_cleanly(proc)
    assert code == 130, err[-3000:]  # before: a KeyboardInterrupt traceback, and no exit
    assert "seqctx: stopped by SIGINT (Ctrl-C): train ended" in err and "Traceback" not in err


def trained_run(synth, tmp_path):
    run = tmp_path / "trained"
    Trainer(tiny_config(synth, run, "train.epochs=1"), progress=False).fit()
    return run


def test_test_and_predict_under_timeout_end_cleanly(synth, tmp_path):
    run = trained_run(synth, tmp_path)
    many = tmp_path / "many.txt"  # a long evaluation (minutes): the training videos 1000 times over, by other names
    lines = []
    videos = sorted((synth / "videos").iterdir())
    for copy in range(1000):
        for i, video in enumerate(videos):
            link = tmp_path / "videos" / f"{copy}_{video.name}"
            link.parent.mkdir(exist_ok=True)
            link.symlink_to(video)
            lines.append(f"{link.name} {i % 4}")
    many.write_text("\n".join(lines) + "\n")
    test = start(["timeout", "-s", "TERM", "15", *cli("test", "--checkpoint", str(run / "latest.pt"), "--out",
                  str(tmp_path / "p.csv"), *sets([f"data.val_annotation={many}", "data.format=list", "data.labels=null",
                  f"data.root={tmp_path / 'videos'}", *WORKERS]))])  # fmt: skip
    code, err = ended_cleanly(test, timeout=60)
    assert code == 124, err[-3000:]  # timeout's code: the command ended on its TERM
    assert "seqctx: stopped by SIGTERM: test ended" in err and "Traceback" not in err
    predict = start(cli("predict", "--checkpoint", str(run / "latest.pt"), str(tmp_path / "videos")))
    wait_for(lambda: bool(predict.stdout.readline()), predict)  # it has predicted a video
    os.killpg(predict.pid, signal.SIGTERM)
    code, err = ended_cleanly(predict)
    assert code == 143 and "seqctx: stopped by SIGTERM: predict ended" in err and "Traceback" not in err


def test_ctrl_c_during_data_prepare_with_workers_ends_with_one_line(synth, tmp_path):
    videos = sorted((synth / "videos").iterdir())
    root = tmp_path / "videos"
    root.mkdir()
    for i in range(200):  # many conversions: the stop comes while the pool works
        (root / f"{i}.mp4").symlink_to(videos[i % len(videos)])
    (tmp_path / "all.txt").write_text("".join(f"{i}.mp4 {i % 4}\n" for i in range(200)))
    out = tmp_path / "prepared"
    proc = start(cli("data", "prepare", str(tmp_path / "all.txt"), "--root", str(root), "--out", str(out),
                     "--short-side", "32", "--workers", "2"))  # fmt: skip
    wait_for(lambda: out.is_dir() and any(out.glob("*.mp4")), proc)  # converting
    os.killpg(proc.pid, signal.SIGINT)
    code, err = ended_cleanly(proc)
    assert code == 130, err[-3000:]  # before: a KeyboardInterrupt traceback from every pool worker
    assert "seqctx: stopped by SIGINT (Ctrl-C): data ended" in err and "Traceback" not in err
    done = {p.name for p in out.glob("*.mp4")}
    assert len(done) < 200  # stopped while converting
    assert done <= {f"{i}.mp4" for i in range(200)}  # named after the links (before: after their targets, raced)
    assert not [p.name for p in out.iterdir() if ".partial" in p.name]  # no half-written copy stays behind


def test_demo_under_timeout_saves_and_exits_75(synth, tmp_path):
    work = tmp_path / "demo"
    shutil.copytree(synth, work / "data")  # the demo's data, made already
    demo = start(["timeout", "-s", "TERM", "15", *cli("demo", "--work-dir", str(work), *sets([
        "model.width=8", "model.num_segments=4", "model.num_classes=4", "data.size=32", "data.scale_size=32",
        "data.batch_size=4", "train.epochs=500", "train.threads=1", *WORKERS]))])  # fmt: skip
    code, err = ended_cleanly(demo, timeout=90)  # before: a Preempted traceback, then a wait on the workers
    assert code == 124, err[-3000:]
    assert "stopped by SIGTERM at epoch" in err and "Traceback" not in err
    assert load_checkpoint(work / "tsn" / "latest.pt")["epoch"] >= 0


def test_an_epoch_continued_on_another_world_size_trains_each_remaining_video_once():
    size, batch = 37, 3  # 37 videos: 6 global batches of 6 on 2 processes, one left over
    two = [EpochSampler(size, True, seed=1, rank=r, world=2, batch_size=batch) for r in range(2)]
    for s in two:
        s.set_epoch(4)
    stream = two[0].stream()
    done = 2  # global batches trained on 2 processes, then stopped
    seen = [i for s in two for i in s.indices()[: done * batch]]
    one = EpochSampler(size, True, seed=1, rank=0, world=1, batch_size=2 * batch)  # the same global batch
    one.set_epoch(4, start=done * 2 * batch)
    rest = one.indices()
    assert sorted(seen + rest) == sorted(stream[: two[0].steps * 2 * batch])  # each once, none lost or doubled
    assert sorted(seen) == sorted(stream[: done * 2 * batch]) and one.steps == two[0].steps == 6
    # and from 1 process to 2
    halves = [EpochSampler(size, True, seed=1, rank=r, world=2, batch_size=batch) for r in range(2)]
    for s in halves:
        s.set_epoch(4, start=3 * 2 * batch)
    resumed = [i for s in halves for i in s.indices()]
    assert sorted(stream[: 3 * 2 * batch] + resumed) == sorted(stream[:36])


def torchrun(config, work_dir, port, nproc, *extra):
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={port}",
           "-m", "seqctx", "train", str(config), "--work-dir", str(work_dir), "--resume", "auto", *extra]  # fmt: skip
    return start(cmd)


@pytest.mark.parametrize("before,after", [(2, 1), (1, 2)])
def test_resuming_on_another_number_of_processes_keeps_the_schedule(synth, tmp_path, before, after):
    common = ["train.epochs=4", "train.eval_every=4", "train.checkpoint_every=1", "optim.milestones=[2]",
              "optim.warmup_epochs=1"]  # fmt: skip
    global_batch = 4
    full = tmp_path / "full"
    Trainer(tiny_config(synth, full, *common, f"data.batch_size={global_batch}"), progress=False).fit()
    config = tmp_path / "config.yaml"
    save_config(tiny_config(synth, tmp_path / "x", *common), config)
    run = tmp_path / "run"
    first = torchrun(config, run, 29561 + before, before, *sets([f"data.batch_size={global_batch // before}"]))
    wait_for(lambda: trained_past(run, 1)() and records(run)[-1].get("iteration") == 1, first)
    os.killpg(first.pid, signal.SIGTERM)
    _, err = ended_cleanly(first, timeout=120)
    assert "stopped by SIGTERM" in err, err[-3000:]
    ckpt = load_checkpoint(run / "latest.pt")
    assert ckpt["world_size"] == before and ckpt["iteration"] > 0  # stopped mid-epoch
    second = torchrun(config, run, 29571 + after, after, *sets([f"data.batch_size={global_batch // after}"]))
    code, err = ended_cleanly(second, timeout=300)
    assert code == 0, err[-3000:]
    assert f"the run was trained on {before} processes, it continues on {after}" in err
    lr = [(r["epoch"], r["iteration"], r["lr"]) for r in records(run) if r["type"] == "train"]
    assert lr == [(r["epoch"], r["iteration"], r["lr"]) for r in records(full) if r["type"] == "train"]
    # another global batch cannot continue the epoch exactly: refused, naming both
    ckpt = load_checkpoint(run / "latest.pt")
    ckpt.update(iteration=1, samples_seen=global_batch)
    torch.save(ckpt, run / "latest.pt")
    args = cli("train", str(config), "--work-dir", str(run), "--resume", "auto", "--set", "data.batch_size=3")
    refused = subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert f"global batch of 4 ({after} processes x {global_batch // after})" in refused.stderr
    assert "this run has 3 (1 processes x data.batch_size=3)" in refused.stderr


def test_a_diverging_run_stops_with_a_clear_error_and_a_valid_log(synth, tmp_path):
    run = tmp_path / "run"
    done = subprocess.run(cli("train", DEMO_YAML, *sets(tiny_overrides(synth, run, "optim.lr=1e9", "train.epochs=3"))),
                          env=ENV, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]  # before: it trained to the end and exited 0
    assert "were not finite for 5 optimiser steps in a row" in done.stderr and "Lower optim.lr" in done.stderr
    lines = (run / "metrics.jsonl").read_text().splitlines()
    parsed = [json.loads(line) for line in lines]  # before: a bare NaN, not JSON
    assert any(r.get("loss") is None for r in parsed if r["type"] == "train")
    assert "NaN" not in (run / "metrics.jsonl").read_text()
