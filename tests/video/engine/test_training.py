"""End-to-end: train, checkpoint, resume (also after a kill), test, predict, torchrun."""

import json
import os
import subprocess
import sys

import pytest
import torch

from seqctx.cli import main
from seqctx.video.engine import Trainer
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
    common = ["train.epochs=1", "train.freeze_bn=all", "optim.clip_grad=null", "train.threads=1"]
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
