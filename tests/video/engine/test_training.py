"""End-to-end: train, checkpoint, resume (also after a kill), test, predict, torchrun."""

import json
import os
import subprocess
import sys

import pytest
import torch

from seqctx.cli import main
from seqctx.video.engine import Trainer, evaluate_checkpoint
from seqctx.video.engine.checkpoint import load_checkpoint, save_checkpoint

from .runs import tiny_config


def weights(path):
    return load_checkpoint(path)["model"]


def test_train_save_resume_test_predict(synth, tmp_path, capsys):
    cfg = tiny_config(synth, tmp_path / "run", "train.epochs=1")
    metrics = Trainer(cfg, progress=False).fit()
    assert set(metrics) == {"train_loss", "top1", "top5", "mean_class_accuracy"}
    run = tmp_path / "run"
    for name in ("latest.pt", "best.pt", "config.yaml", "metrics.jsonl", "loss.png", "accuracy.png"):
        assert (run / name).is_file(), name
    ckpt = load_checkpoint(run / "latest.pt")  # weights_only=True
    assert ckpt["epoch"] == 1 and ckpt["iteration"] == 0 and len(ckpt["classes"]) == 4
    assert set(ckpt) >= {"model", "optimizer", "scheduler", "scaler", "rng", "best_top1", "config"}
    # resume continues to epoch 2 from the saved state
    cfg2 = tiny_config(synth, run, "train.epochs=2")
    trainer = Trainer(cfg2, resume=True, progress=False)
    assert trainer.epoch == 1
    trainer.fit()
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["type"] == "epoch"] == [1, 2]
    # test with 2 clips x 3 crops, predictions CSV
    cfg_file = run / "config.yaml"
    assert main(["test", str(cfg_file), "--checkpoint", str(run / "latest.pt"), "--clips", "2", "--crops", "3",
                 "--set", "data.scale_size=36"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "4 videos evaluated: top-1" in out
    rows = (run / "predictions.csv").read_text().splitlines()
    assert rows[0].startswith("id,status,label,label_name,pred,pred_name") and len(rows) == 5
    assert json.loads((run / "predictions.json").read_text())["clips"] == 2
    video = next((synth / "videos").glob("*.mp4"))
    assert main(["predict", "--checkpoint", str(run / "latest.pt"), str(video)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(video) and len(lines) == 5  # the video and its top-4 (4 classes)
    assert "Moving something" in "".join(lines)


def test_killed_mid_epoch_resumes_to_the_same_weights(synth, tmp_path):
    full = tmp_path / "full"
    Trainer(tiny_config(synth, full, "train.checkpoint_every=1"), progress=False).fit()

    class Killed(Exception):
        pass

    def kill_at(epoch, iteration):
        if epoch == 1 and iteration == 2:
            raise Killed

    part = tmp_path / "part"
    with pytest.raises(Killed):
        Trainer(tiny_config(synth, part, "train.checkpoint_every=1"), progress=False, on_iteration=kill_at).fit()
    ckpt = load_checkpoint(part / "latest.pt")
    assert (ckpt["epoch"], ckpt["iteration"]) == (1, 2)  # killed mid-epoch 2, after iteration 2
    Trainer(tiny_config(synth, part, "train.checkpoint_every=1"), resume=True, progress=False).fit()
    a, b = weights(full / "latest.pt"), weights(part / "latest.pt")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


def test_a_kill_while_saving_never_breaks_latest(tmp_path, monkeypatch):
    path = tmp_path / "latest.pt"
    save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)

    def dying_save(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"epoch": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1


def test_torchrun_two_processes_match_one(synth, tmp_path):
    # 2 micro-batches a step: the 2-process run all-reduces on the second only (no_sync on the first)
    common = ["train.epochs=1", "train.freeze_bn=all", "optim.clip_grad=null", "train.threads=1", "train.accumulate=2"]
    single = tiny_config(synth, tmp_path / "one", *common, "data.batch_size=6")
    Trainer(single, progress=False).fit()
    cfg_file = tmp_path / "one" / "config.yaml"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533", "-m", "seqctx",
           "train", str(cfg_file), "--set", "data.batch_size=3", "--work-dir", str(tmp_path / "two")]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    def losses(run):
        recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        return [r["loss"] for r in recs if r["type"] == "train"]

    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(one) == len(two) == 2
    assert one == pytest.approx(two, abs=1e-4)
    a, b = weights(tmp_path / "one" / "latest.pt"), weights(tmp_path / "two" / "latest.pt")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-4, msg=k)  # summation order differs
    # validation inside the 2-process run (each process half of the videos) = one process on its weights
    val = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    val = next(r for r in val if r["type"] == "val")
    alone = evaluate_checkpoint(None, tmp_path / "two" / "latest.pt", out=tmp_path / "alone.csv", progress=False)
    assert val["num_videos"] == alone.num_videos == 4
    assert [val[k] for k in alone.metrics()] == pytest.approx(list(alone.metrics().values()), abs=1e-6)
    rng = load_checkpoint(tmp_path / "two" / "latest.pt")["rng"]  # each process's own RNG state
    assert len(rng) == 2 and not torch.equal(rng[0]["torch"], rng[1]["torch"])  # seeded with seed + rank


def test_distributed_test_equals_one_process_and_counts_each_video_once(synth, tmp_path, capsys):
    run = tmp_path / "run"
    Trainer(tiny_config(synth, run, "train.epochs=1", "data.val_annotation="), progress=False).fit()
    videos = json.loads((synth / "train.json").read_text())[:4] + [{**json.loads((synth / "train.json").read_text())[0],
                                                                     "id": "missing0"}]  # fmt: skip
    odd = tmp_path / "odd.json"  # 5 videos, one unreadable: 3 + 2 over two processes, nothing padded
    odd.write_text(json.dumps(videos))
    sets = ["--set", f"data.val_annotation={odd}", "--set", "data.test_clips=2"]
    assert main(["test", "--checkpoint", str(run / "latest.pt"), *sets, "--out", str(tmp_path / "one.csv")]) == 0
    one_line = capsys.readouterr().out.strip()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29534", "-m", "seqctx",
           "test", "--checkpoint", str(run / "latest.pt"), *sets, "--out", str(tmp_path / "two.csv")]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = one_line.splitlines()  # the metrics, then the most confused classes
    assert proc.stdout.strip().splitlines()[-2:] == lines and proc.stdout.count("evaluated") == 1  # by rank 0
    assert lines[0].startswith("4 videos evaluated (1 unreadable, left out: missing0)")
    assert lines[1].startswith("most confused (true -> predicted, videos): ")
    assert (tmp_path / "two.csv").read_text() == (tmp_path / "one.csv").read_text()
    for name in ("_confusion.json", "_confusion.png"):
        assert (tmp_path / f"two{name}").read_bytes() == (tmp_path / f"one{name}").read_bytes()
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert {k: v for k, v in one.items() if k != "checkpoint"} == {k: v for k, v in two.items() if k != "checkpoint"}


def test_the_schedule_advances_only_when_the_optimiser_steps(synth, tmp_path):
    trainer = Trainer(tiny_config(synth, tmp_path / "run", "data.val_annotation="), progress=False)
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)  # as fp16 training on CUDA uses it
    trainer.scaler.scale(torch.ones(()))  # the scale is created with the first scaled loss
    before = [p.detach().clone() for p in trainer.model.parameters()]
    for p in trainer.model.parameters():
        p.grad = torch.full_like(p, float("inf"))  # an overflowed step: GradScaler skips it
    lr0 = trainer.optimizer.param_groups[0]["lr"]
    trainer._step()
    assert trainer.scaler.get_scale() == 512.0 and int(trainer.skipped_steps) == 1  # counted on the device
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True))
    trainer._rewind_skipped_steps()  # at the next log: the schedule takes the skipped step back
    assert trainer.scheduler.last_epoch == 0 and trainer.optimizer.param_groups[0]["lr"] == lr0
    assert trainer.scheduler.get_last_lr()[0] == lr0 and int(trainer.skipped_steps) == 0
    for p in trainer.model.parameters():
        p.grad = torch.zeros_like(p)
    trainer._step()
    trainer._rewind_skipped_steps()
    assert trainer.scheduler.last_epoch == 1


def test_leaving_the_trainer_puts_back_threads_and_global_rngs(synth, tmp_path):
    import random

    import numpy as np

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        states = random.getstate(), np.random.get_state(), torch.get_rng_state()
        expected = random.random(), np.random.rand(), torch.rand(1)
        random.setstate(states[0]), np.random.set_state(states[1]), torch.set_rng_state(states[2])
        with Trainer(tiny_config(synth, tmp_path / "run", "data.val_annotation="), progress=False):
            assert torch.get_num_threads() == 1  # train.threads
            torch.rand(3)  # the run's draws
        assert torch.get_num_threads() == 2
        assert (random.random(), np.random.rand(), torch.rand(1)) == expected
    finally:
        torch.set_num_threads(threads)


def test_distributed_helpers_on_one_machine(monkeypatch):
    from seqctx.modules import ContextGate
    from seqctx.video.engine.distributed import local_device
    from seqctx.video.engine.train import backbone_norms, sync_backbone_norms
    from seqctx.video.models import build_model

    monkeypatch.setenv("LOCAL_RANK", "1")
    if torch.cuda.device_count() < 2:
        assert local_device("auto") == torch.device("cpu")  # a second process on a 1-GPU (or CPU) host
    model = sync_backbone_norms(build_model("tsm_r18", 4, num_segments=4, context="cgc", width=8, input_size=32))
    synced = [m for m in model.modules() if isinstance(m, torch.nn.SyncBatchNorm)]
    assert len(synced) == len(backbone_norms(model)) == 1 + 8 * 2 + 3  # stem, 2 per block, 3 projections
    gates = [m for g in model.modules() if isinstance(g, ContextGate) for m in g.modules()]
    assert all(type(m) is torch.nn.BatchNorm1d for m in gates if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))


def test_tensorboard_gets_the_numbers_of_metrics_jsonl(synth, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    trainer = Trainer(tiny_config(synth, run, "train.epochs=1", "train.tensorboard=true"), progress=False)
    trainer.fit()
    trainer.close()
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/clips_per_s", "epoch/train_loss", "val/top1", "val/top5"} <= tags
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["type"] == "train"]
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx(losses)
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3]  # iterations
    top1 = next(r["top1"] for r in records if r["type"] == "val")
    assert events.Scalars("val/top1")[0].value == pytest.approx(top1)
