"""Runs that survive a cluster: a stop signal saves the iteration and `--resume auto` continues to the
same weights; an elastic torchrun restart after a SIGKILLed rank; retained checkpoints when latest.pt
is truncated; a failed save keeps the previous one; one run per work folder. Real processes, real
signals."""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from seqctx.cli import main
from seqctx.errors import CheckpointError, WorkDirError
from seqctx.stopping import PREEMPTED_EXIT_CODE, Preempted
from seqctx.video.engine import Trainer, workdir_lock
from seqctx.video.engine import train as train_module
from seqctx.video.engine.checkpoint import load_checkpoint, retained_checkpoints, save_checkpoint
from seqctx.video.engine.workdir_lock import WorkDirLock
from tests.procs import processes

from .runs import tiny_config, tiny_overrides

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def weights(path):
    return load_checkpoint(path)["model"]


def assert_same_weights(a_path, b_path, atol=0.0, rtol=0.0):
    a, b = weights(a_path), weights(b_path)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=rtol, atol=atol, msg=k)


def records(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def sets(items):
    return [x for item in items for x in ("--set", item)]


def cli(*args):
    return [sys.executable, "-m", "seqctx", *args]


def wait_for(predicate, proc, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"the run ended before the fault was injected:\n{proc.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, "timed out waiting for the run"
        time.sleep(0.01)


def trained_past(run, epoch):
    def check():
        try:
            return any(r["type"] == "train" and r["epoch"] >= epoch for r in records(run))
        except (FileNotFoundError, json.JSONDecodeError):
            return False

    return check


def test_a_signal_in_process_saves_that_iteration_and_a_second_one_during_the_save_changes_nothing(
    synth, tmp_path, monkeypatch
):
    full = tmp_path / "full"
    Trainer(tiny_config(synth, full), progress=False).fit()

    fired = []

    def signal_at(epoch, iteration):
        if (epoch, iteration) == (1, 2):
            os.kill(os.getpid(), signal.SIGUSR1)  # as SLURM's --signal=USR1@... would
            fired.append(True)

    real_save = train_module.save_checkpoint

    def save_while_signalled(state, path):
        if fired:
            os.kill(os.getpid(), signal.SIGTERM)  # a second signal arrives during the save
        real_save(state, path)

    monkeypatch.setattr(train_module, "save_checkpoint", save_while_signalled)
    part = tmp_path / "part"
    with pytest.raises(Preempted, match=r"stopped by SIGUSR1 at epoch 2, iteration 2") as stopped:
        with Trainer(tiny_config(synth, part), progress=False, on_iteration=signal_at) as trainer:
            trainer.fit()
    assert (stopped.value.epoch, stopped.value.iteration) == (1, 2)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are put back
    monkeypatch.undo()
    ckpt = load_checkpoint(part / "latest.pt")
    assert (ckpt["epoch"], ckpt["iteration"]) == (1, 2)
    assert not (part / "run.lock").exists()
    with Trainer(tiny_config(synth, part, "train.resume=auto"), progress=False) as trainer:
        assert (trainer.epoch, trainer.iteration) == (1, 2)
        trainer.fit()
    assert_same_weights(full / "latest.pt", part / "latest.pt")
    # the log of the resumed run equals the uninterrupted one's (the lines after the checkpoint were dropped)
    strip = [{k: v for k, v in r.items() if k != "clips_per_s"} for r in records(part)]
    assert strip == [{k: v for k, v in r.items() if k != "clips_per_s"} for r in records(full)]


def test_sigterm_to_a_training_process_exits_75_and_resume_auto_finishes_the_same_run(synth, tmp_path, capsys):
    common = ["train.epochs=12", "train.eval_every=12", "train.keep_checkpoints=2"]
    full = tmp_path / "full"
    Trainer(tiny_config(synth, full, *common), progress=False).fit()
    run = tmp_path / "run"
    args = cli("train", str(full / "config.yaml"), "--work-dir", str(run), "--resume", "auto")
    proc = subprocess.Popen(args, env=ENV, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    wait_for(trained_past(run, 1), proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == PREEMPTED_EXIT_CODE, err[-3000:]
    ckpt = load_checkpoint(run / "latest.pt")
    last = [r for r in records(run) if r["type"] == "train"][-1]
    assert (ckpt["epoch"], ckpt["iteration"]) == (last["epoch"], last["iteration"])  # the iteration it stopped at
    assert f"stopped by SIGTERM at epoch {ckpt['epoch'] + 1}, iteration {ckpt['iteration']}" in err
    assert ckpt["epoch"] < 12 and len(retained_checkpoints(run)) <= 2
    # a rerun of the same command continues and finishes with the uninterrupted run's weights
    assert main(["train", str(full / "config.yaml"), "--work-dir", str(run), "--resume", "auto"]) == 0
    assert_same_weights(full / "latest.pt", run / "latest.pt")
    # once more: the run is finished, said so, exit 0
    assert main(["train", str(full / "config.yaml"), "--work-dir", str(run), "--resume", "auto"]) == 0
    assert "is finished (12 of 12 epochs)" in capsys.readouterr().err


def stop_group_in_epoch_2(args: list[str], run: Path) -> None:
    """Start ``args`` (a training command writing to ``run``) in a process group of its own, send
    SIGTERM to the whole group once it trained past epoch 1, and check that it stopped resumable."""
    proc = subprocess.Popen(args, env=ENV, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    wait_for(trained_past(run, 1), proc)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == PREEMPTED_EXIT_CODE, err[-3000:]


def test_a_signal_to_the_whole_process_group_stops_the_run_with_loader_workers_alive(synth, tmp_path):
    """timeout(1), or a scheduler signalling every process of a job: the loader workers get SIGTERM
    too (PyTorch's own worker handler would end them and fail the run before it saves)."""
    run = tmp_path / "run"
    overrides = tiny_overrides(synth, run, "train.epochs=200", "train.eval_every=200", "data.workers=2")
    stop_group_in_epoch_2(cli("train", str(Path(train_module.__file__).parent / "demo_synthetic.yaml"),
                              *sets(overrides)), run)  # fmt: skip
    ckpt = load_checkpoint(run / "latest.pt")
    last = [r for r in records(run) if r["type"] == "train"][-1]
    assert (ckpt["epoch"], ckpt["iteration"]) == (last["epoch"], last["iteration"])


def child_pids(pid):
    return [p.pid for p in processes() if p.ppid == pid]


def worker_rank(pid):
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return next(int(e.split(b"=")[1]) for e in env if e.startswith(b"RANK="))


def test_torchrun_restarts_after_a_rank_is_killed_and_ends_with_the_uninterrupted_weights(synth, tmp_path):
    common = ["train.epochs=6", "train.eval_every=6", "train.freeze_bn=all", "train.checkpoint_every=1",
              "data.batch_size=3", "optim.clip_grad=null"]  # fmt: skip
    cfg = tiny_config(synth, tmp_path / "cfg", *common)
    from seqctx.video.engine.config import save_config

    config = tmp_path / "config.yaml"
    save_config(cfg, config)

    def torchrun(work_dir, port):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--max-restarts=1",
               f"--master_port={port}", "-m", "seqctx", "train", str(config), "--work-dir", str(work_dir),
               "--resume", "auto"]  # fmt: skip
        return subprocess.Popen(cmd, env=ENV, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    whole = torchrun(tmp_path / "whole", 29541)
    _, err = whole.communicate(timeout=300)
    assert whole.returncode == 0, err[-3000:]
    hit = tmp_path / "hit"
    proc = torchrun(hit, 29542)
    wait_for(trained_past(hit, 2), proc)
    victim = next(p for p in child_pids(proc.pid) if worker_rank(p) == 1)
    os.kill(victim, signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    Path("/tmp/elastic_err.txt").write_text(err)
    assert proc.returncode == 0, err[-3000:]
    assert "resuming the run in" in err and "resumed from epoch" in err  # the restarted group resumed by itself
    assert_same_weights(tmp_path / "whole" / "latest.pt", hit / "latest.pt", rtol=1e-3, atol=1e-4)


def test_a_truncated_latest_falls_back_to_the_newest_readable_checkpoint_with_a_warning(synth, tmp_path, caplog):
    full = tmp_path / "full"
    Trainer(tiny_config(synth, full, "train.epochs=2"), progress=False).fit()
    run = tmp_path / "run"
    Trainer(tiny_config(synth, run, "train.epochs=1", "train.keep_checkpoints=2"), progress=False).fit()
    latest = run / "latest.pt"
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])  # a copy cut short
    caplog.set_level(logging.WARNING, logger="seqctx")
    with Trainer(tiny_config(synth, run, "train.epochs=2", "train.resume=auto"), progress=False) as trainer:
        assert trainer.epoch == 1
        trainer.fit()
    warning = next(r.getMessage() for r in caplog.records if "resuming from" in r.getMessage())
    assert str(latest) in warning and "checkpoint_e0001_i0000000.pt" in warning and "truncated" in warning
    assert_same_weights(full / "latest.pt", latest)
    # nothing readable: an error naming each file, never a fresh start
    for path in [latest, *retained_checkpoints(run), run / "best.pt"]:
        path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"nothing readable to resume .*latest.pt is empty.*best.pt is empty"):
        Trainer(tiny_config(synth, run, "train.epochs=3", "train.resume=auto"), progress=False)


def test_a_save_that_fails_keeps_the_previous_latest_and_names_the_path(synth, tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_config(synth, run, "train.epochs=1"), progress=False).fit()
    before = (run / "latest.pt").read_bytes()
    (run / "latest.pt.tmp").symlink_to("/dev/full")  # the save's write runs into a full device: ENOSPC
    with pytest.raises(CheckpointError, match=rf"could not write {run / 'latest.pt'}: No space left on device"):
        Trainer(tiny_config(synth, run, "train.epochs=2"), resume=True, progress=False).fit()
    assert (run / "latest.pt").read_bytes() == before and load_checkpoint(run / "latest.pt")["epoch"] == 1
    assert not (run / "latest.pt.tmp").exists() and not (run / "run.lock").exists()
    save_checkpoint({"epoch": 3}, run / "latest.pt")  # the device has room again: saving works
    assert load_checkpoint(run / "latest.pt")["epoch"] == 3


def test_one_run_per_work_folder(synth, tmp_path):
    run = tmp_path / "run"
    first = subprocess.Popen(
        cli("train", str(Path(train_module.__file__).parent / "demo_synthetic.yaml"),
            *sets(tiny_overrides(synth, run, "train.epochs=500", "train.eval_every=500")), "--overwrite"),
        env=ENV, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_for(trained_past(run, 0), first)
    second = subprocess.run(
        cli("train", str(run / "config.yaml"), "--work-dir", str(run), "--overwrite"),
        env=ENV, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert first.poll() is None, "the first run ended before the second one tried"
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=120)
    assert first.returncode == PREEMPTED_EXIT_CODE, err[-3000:]
    assert second.returncode == 2, second.stderr[-3000:]
    assert f"is in use by another run: pid {first.pid} on" in second.stderr
    assert "this one (pid" in second.stderr
    epochs = [r["epoch"] for r in records(run) if r["type"] == "epoch"]
    assert epochs == list(range(1, len(epochs) + 1))  # one run's lines, none interleaved
    assert not (run / "run.lock").exists() and not list(run.glob("replaced-*"))


def test_a_stale_lock_is_taken_over_and_a_live_one_on_another_host_is_waited_for(tmp_path, monkeypatch, caplog):
    folder = tmp_path / "run"
    folder.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock = WorkDirLock(folder)
    (folder / "run.lock").write_text(json.dumps({**lock.me, "pid": int(dead.stdout), "start": None}))
    caplog.set_level(logging.WARNING, logger="seqctx")
    lock.acquire()  # its holder is gone: taken over, with a warning
    assert json.loads((folder / "run.lock").read_text())["pid"] == os.getpid()
    assert "taking over the lock of a run that is gone" in caplog.text
    with pytest.raises(WorkDirError, match=rf"in use by another run: pid {os.getpid()}"):
        WorkDirLock(folder).acquire()  # a live holder on this host
    lock.release()
    assert not (folder / "run.lock").exists()
    # another host: live while its heartbeat goes on, stale once it stops
    monkeypatch.setattr(workdir_lock, "STALE_AFTER_S", 0.5)
    monkeypatch.setattr(workdir_lock, "HEARTBEAT_S", 0.1)
    (folder / "run.lock").write_text(json.dumps({"host": "node-17", "pid": 4242, "since": "then"}))
    start = time.monotonic()
    with pytest.raises(WorkDirError, match="pid 4242 on node-17"):
        other = WorkDirLock(folder)
        beating = WorkDirLock(folder)
        beating.path = folder / "run.lock"
        beating._start_heartbeat()  # the other host's process keeps touching its lock
        try:
            other.acquire()
        finally:
            beating._stop.set()
    assert time.monotonic() - start >= 0.5  # it waited for the heartbeat before refusing
    os.utime(folder / "run.lock", (time.time() - 5, time.time() - 5))  # no heartbeat for 5 s
    taker = WorkDirLock(folder)
    taker.acquire()
    assert json.loads((folder / "run.lock").read_text())["host"] == taker.me["host"]
    taker.release()


def test_the_slurm_script_saves_on_the_time_limit_signal_requeues_and_the_requeued_job_finishes(synth, tmp_path):
    """scripts/slurm_train.sh under stand-ins for srun (runs the step here) and scontrol (records a
    requeue): USR1 to the batch script, as --signal=B:USR1@... sends it, then the requeued job."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/bash\nwhile [[ "$1" == --* ]]; do shift; done\nexec "$@"\n')
    (bin_dir / "scontrol").write_text(
        f'#!/bin/bash\nif [ "$1" = show ]; then echo 127.0.0.1; else echo "$@" >> {tmp_path / "requeued"}; fi\n'
    )
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    full = tmp_path / "full"
    Trainer(tiny_config(synth, full, "train.epochs=12", "train.eval_every=12"), progress=False).fit()
    run = tmp_path / "run"
    slurm = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "node1", "SLURM_JOB_NUM_NODES": "1"}
    env = {**ENV, **slurm, "PATH": f"{bin_dir}:{ENV['PATH']}", "PYTHON": sys.executable, "GPUS_PER_NODE": "1",
           "MASTER_PORT": "29551"}  # fmt: skip
    script = Path(__file__).parents[3] / "scripts" / "slurm_train.sh"
    args = ["bash", str(script), str(full / "config.yaml"), "--work-dir", str(run)]
    job = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(trained_past(run, 1), job)
    job.send_signal(signal.SIGUSR1)
    out, _ = job.communicate(timeout=180)
    assert job.returncode == 0, out[-3000:]
    assert (tmp_path / "requeued").read_text() == "requeue 4242\n"
    ckpt = load_checkpoint(run / "latest.pt")
    assert ckpt["epoch"] < 12 and "stopped by SIGTERM" in out
    done = subprocess.run(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "resuming the run in" in done.stdout and (tmp_path / "requeued").read_text() == "requeue 4242\n"
    assert_same_weights(full / "latest.pt", run / "latest.pt")


def _contend(folder, barrier, results):
    from seqctx.video.engine import workdir_lock as wl

    judge = wl.WorkDirLock._stale

    def slow_judge(self, holder):  # every contender judges the lock stale before any of them acts
        stale = judge(self, holder)
        time.sleep(0.3)
        return stale

    wl.WorkDirLock._stale = slow_judge
    lock = wl.WorkDirLock(folder)
    barrier.wait()
    try:
        lock.acquire()
    except WorkDirError:
        results.put("refused")
        return
    results.put("won")
    time.sleep(1.5)  # holds it while the others decide
    lock.release()


def test_of_several_contenders_for_one_stale_lock_exactly_one_wins(tmp_path):
    import multiprocessing as mp

    folder = tmp_path / "run"
    folder.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = {**WorkDirLock(folder).me, "pid": int(dead.stdout), "start": None}
    ctx = mp.get_context("fork")
    for _ in range(3):
        (folder / "run.lock").write_text(json.dumps(stale))
        barrier, results = ctx.Barrier(4), ctx.Queue()
        procs = [ctx.Process(target=_contend, args=(folder, barrier, results)) for _ in range(4)]
        for p in procs:
            p.start()
        outcomes = sorted(results.get(timeout=60) for _ in procs)
        for p in procs:
            p.join(timeout=60)
        assert outcomes == ["refused"] * 3 + ["won"]  # before: unlink + create let two or more win
        assert not (folder / "run.lock").exists() and not list(folder.glob("run.lock.*"))


def test_the_heartbeat_logs_a_failed_touch_and_goes_on(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(workdir_lock, "HEARTBEAT_S", 0.05)
    lock = WorkDirLock(tmp_path)
    lock.acquire()
    real, calls = os.utime, []

    def flaky(path, *a, **k):
        calls.append(path)
        if len(calls) <= 2:
            raise OSError(5, "Input/output error")
        return real(path, *a, **k)

    monkeypatch.setattr(workdir_lock.os, "utime", flaky)
    caplog.set_level(logging.WARNING, logger="seqctx")
    real(lock.path, (0, 0))
    deadline = time.monotonic() + 10
    while lock.path.stat().st_mtime == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    lock.release()
    assert len(calls) >= 3  # before: the thread stopped at the first OSError
    assert "could not touch the lock ([Errno 5] Input/output error)" in caplog.text
    assert "touches the lock again" in caplog.text
