"""What the command line promises: the checkpoint decides the model, evaluation never substitutes
videos, a work folder is never overwritten silently, and a user's mistake is one clear message."""

import csv
import json
import shutil

import pytest
import torch

from seqctx.cli import main
from seqctx.errors import CheckpointError, DataError, WorkDirError
from seqctx.video.engine import Trainer
from seqctx.video.engine.checkpoint import load_checkpoint
from seqctx.video.engine.demo import DEMO_CONFIG

from .runs import tiny_config, tiny_overrides


@pytest.fixture(scope="module")
def tsm_cgc_run(synth, tmp_path_factory):
    """A TSM-R18+CGC run trained with model keys given only on the command line (1 epoch)."""
    run = tmp_path_factory.mktemp("tsm_cgc")
    Trainer(tiny_config(synth, run, "model.context=cgc", "train.epochs=1"), progress=False).fit()
    return run


def sets(*items):
    return [x for item in items for x in ("--set", item)]


def data_sets(synth):
    return [x for x in tiny_overrides(synth, synth) if x.startswith("data.")]


def test_test_builds_the_checkpoints_model_not_the_configs(synth, tsm_cgc_run, tmp_path, capsys):
    ckpt = str(tsm_cgc_run / "latest.pt")
    # the checkpoint alone: its own config, its own model
    assert main(["test", "--checkpoint", ckpt, "--out", str(tmp_path / "a.csv")]) == 0
    alone = capsys.readouterr().out
    assert "4 videos evaluated: top-1" in alone
    # the demo config says tsn_r18 without CGC: a conflict naming both values, not a silent TSN
    code = main(["test", str(DEMO_CONFIG), "--checkpoint", ckpt, *sets(*data_sets(synth))])
    err = capsys.readouterr().err
    assert code == 2 and "model.name: the checkpoint's is 'tsm_r18', the request's 'tsn_r18'" in err
    assert "model.context: the checkpoint's is 'cgc', the request's None" in err and "Traceback" not in err
    assert main(["test", "--checkpoint", ckpt, "--set", "model.context=gct"]) == 2
    assert "model.context" in capsys.readouterr().err
    # data and views may change; pretrained and dropout do not change a trained network
    assert main(["test", "--checkpoint", ckpt, "--clips", "2", "--set", "model.dropout=0.3",
                 "--set", "data.scale_size=36", "--out", str(tmp_path / "b.csv")]) == 0  # fmt: skip
    assert "4 videos evaluated" in capsys.readouterr().out
    assert json.loads((tmp_path / "b.json").read_text())["clips"] == 2


def test_a_checkpoint_saved_with_model_input_size_still_loads(tsm_cgc_run, tmp_path):
    """Runs saved while ``model.input_size`` and ``data.size`` were two knobs keep loading: the
    model is rebuilt for ``data.size`` and gives the same logits."""
    from seqctx.video.engine.evaluate import load_trained_model

    ckpt = load_checkpoint(tsm_cgc_run / "latest.pt")
    ckpt["config"]["model"]["input_size"] = ckpt["config"]["data"]["size"]
    torch.save(ckpt, tmp_path / "old.pt")
    _, old, _ = load_trained_model(None, tmp_path / "old.pt")
    _, new, _ = load_trained_model(None, tsm_cgc_run / "latest.pt")
    clip = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        assert torch.equal(old(clip), new(clip))


def test_resume_after_a_model_change_is_refused(synth, tsm_cgc_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tsm_cgc_run, run)
    with pytest.raises(CheckpointError, match="model.context: the checkpoint's is 'cgc', the request's None"):
        Trainer(tiny_config(synth, run, "train.epochs=3"), resume=True, progress=False)


def test_evaluation_leaves_unreadable_videos_out_and_names_them(synth, tsm_cgc_run, tmp_path, capsys):
    entries = json.loads((synth / "validation.json").read_text())
    missing = [dict(e, id=f"missing{i}") for i, e in enumerate(entries[:3])]
    (tmp_path / "val.json").write_text(json.dumps(entries + missing))
    (tmp_path / "empty.webm").write_bytes(b"")  # never used: ids resolve under data.root only
    out = tmp_path / "pred.csv"
    code = main(["test", "--checkpoint", str(tsm_cgc_run / "latest.pt"), "--out", str(out),
                 "--set", f"data.val_annotation={tmp_path / 'val.json'}", "--set", "data.batch_size=3"])  # fmt: skip
    summary = capsys.readouterr().out
    assert code == 0
    assert "4 videos evaluated (3 unreadable, left out: missing0, missing1, missing2)" in summary
    rows = list(csv.DictReader(out.open()))
    assert [r["id"] for r in rows] == [e["id"] for e in entries] + ["missing0", "missing1", "missing2"]
    assert len({r["id"] for r in rows}) == len(rows)  # each video once
    looked = f"{synth / 'videos' / 'missing0.mp4'}, {synth / 'videos' / 'missing0.webm'}"  # the found layout first
    assert rows[4]["status"] == f"unreadable: video 'missing0' not found (looked for {looked})"
    assert all(r["status"] == "ok" and r["pred"] for r in rows[:4]) and not any(r["pred"] for r in rows[4:])
    metrics = json.loads(out.with_suffix(".json").read_text())
    assert metrics["num_videos"] == 4 and metrics["num_unreadable"] == 3
    assert [u["id"] for u in metrics["unreadable"]] == ["missing0", "missing1", "missing2"]


def test_validation_during_training_does_not_substitute_videos(synth, tmp_path):
    entries = json.loads((synth / "validation.json").read_text())
    (tmp_path / "val.json").write_text(json.dumps(entries + [dict(entries[0], id="gone")]))
    run = tmp_path / "run"
    cfg = tiny_config(synth, run, "train.epochs=1", f"data.val_annotation={tmp_path / 'val.json'}")
    Trainer(cfg, progress=False).fit()
    val = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"val"' in x]
    assert val[0]["num_videos"] == 4 and val[0]["unreadable"] == ["gone"]


def test_num_classes_smaller_than_the_labels_names_both_numbers(synth, tmp_path):
    with pytest.raises(DataError, match=r"model.num_classes is 3 but .*train.json has labels up to 3 \(4 classes\)"):
        Trainer(tiny_config(synth, tmp_path / "run", "model.num_classes=3"), progress=False)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_a_work_dir_with_a_run_is_never_overwritten_silently(synth, tsm_cgc_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tsm_cgc_run, run)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    args = ["train", str(DEMO_CONFIG), *sets(*tiny_overrides(synth, run, "model.context=cgc", "train.epochs=1"))]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{run} holds a run" in err and "--resume" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # nothing touched
    assert main([*args, "--resume"]) == 2  # 1 of 1 epochs done
    assert "is finished (1 of train.epochs=1 epochs)" in capsys.readouterr().err
    assert main(["train", str(DEMO_CONFIG), "--resume", *sets(*tiny_overrides(synth, tmp_path / "new"))]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    (old,) = run.glob("replaced-*")
    assert {p.name: p.read_bytes() for p in old.iterdir()} == before  # moved aside, intact
    records = (run / "metrics.jsonl").read_text().splitlines()
    assert sum('"epoch"' in r and '"train_loss"' in r for r in records) == 1  # one run's records only


def test_the_last_partial_batch_is_dropped(synth, tmp_path):
    # 12 training videos, batch 11: the old loader's last batch of one broke GE-theta's BatchNorm
    cfg = tiny_config(synth, tmp_path / "run", "model.context=ge_theta", "train.epochs=1", "data.batch_size=11")
    trainer = Trainer(cfg, progress=False)
    assert trainer.iters_per_epoch == 1
    trainer.fit()
    assert load_checkpoint(tmp_path / "run" / "latest.pt")["epoch"] == 1
    with pytest.raises(DataError, match=r"fewer than one global batch \(data.batch_size=13 x 1 processes\)"):
        Trainer(tiny_config(synth, tmp_path / "big", "data.batch_size=13"), progress=False)


def test_predict_reports_each_video_and_the_failures(synth, tsm_cgc_run, capsys):
    video = str(next((synth / "videos").glob("*.mp4")))
    code = main(["predict", "--checkpoint", str(tsm_cgc_run / "latest.pt"), video, "missing.mp4", video])
    out, err = capsys.readouterr()
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == video and lines[5] == "missing.mp4" and "no such file" in lines[6] and lines[7] == video
    assert "1 of 3 videos could not be read: missing.mp4" in err


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.backend=decrod"], "'data.backend' must be one of 'auto', 'decord', 'pyav', 'torchcodec', 'frames'"),
        (["data.batch_size=0"], "config key 'data.batch_size' must be >= 1, got 0"),
        (["data.test_crops=true"], "config key 'data.test_crops' must be one of 1, 3, 10; got True"),
        (["train.amp=fp32"], "config key 'train.amp' must be one of 'bf16', 'fp16'; got 'fp32'"),
        (["model.input_size=32"], "config key 'model.input_size' is gone: data.size is the one knob"),
        (["train.epochs=0"], "config key 'train.epochs' must be >= 1, got 0"),
        (["model.context=cgc1d"], "'cgc1d' is not available for tsm_r18"),
        (
            ["data.root=/nowhere"],
            "none of the first 10 videos of the annotation file exists (for the first, looked for /nowhere/",
        ),
    ],
)
def test_user_mistakes_are_one_message_and_exit_code_2(synth, tmp_path, capsys, overrides, message):
    run = tmp_path / "run"
    assert main(["train", str(DEMO_CONFIG), *sets(*tiny_overrides(synth, run), *overrides)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("seqctx: error: ") and message in err and "Traceback" not in err
    assert not run.exists()  # caught before anything was written


def test_the_pretrained_weights_report_is_shown_and_weights_that_do_not_fit_stop_the_run(synth, tmp_path, capsys):
    import torchvision

    from seqctx.video.models import build_model

    tiny = build_model("resnet18", 1000, width=8)  # a torchvision-layout file of the tiny model's width
    weights = tmp_path / "resnet18-w8.pth"
    torch.save({k.removeprefix("trunk.").removeprefix("head."): v for k, v in tiny.state_dict().items()}, weights)
    overrides = tiny_overrides(synth, tmp_path / "run", f"model.pretrained={weights}", "train.epochs=1")
    assert main(["train", str(DEMO_CONFIG), *sets(*overrides)]) == 0
    err = capsys.readouterr().err
    assert f"pretrained weights {weights}: torchvision layout: loaded 120 tensors" in err  # all but the fc
    assert "the classifier has another class count (head.fc.weight (1000, 64) -> (4, 64)" in err

    wide = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), wide)  # width 64: the tiny model's is 8
    overrides = tiny_overrides(synth, tmp_path / "run2", f"model.pretrained={wide}", "train.epochs=1")
    assert main(["train", str(DEMO_CONFIG), *sets(*overrides)]) == 2
    err = capsys.readouterr().err
    assert f"seqctx: error: pretrained weights {wide} (torchvision layout) do not fit the model: 100 tensors" in err
    assert "trunk.conv1.weight (64, 3, 7, 7) -> (8, 3, 7, 7)" in err

    other = tmp_path / "mobilenet.pth"
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), other)  # nothing of it fits a ResNet
    overrides = tiny_overrides(synth, tmp_path / "run3", f"model.pretrained={other}", "train.epochs=1")
    assert main(["train", str(DEMO_CONFIG), *sets(*overrides)]) == 0
    assert "filled only 0 of the model's 102 weight tensors" in capsys.readouterr().err


def test_debug_shows_the_traceback(synth, tmp_path):
    with pytest.raises(WorkDirError):
        main(["--debug", "train", str(DEMO_CONFIG), "--resume", *sets(*tiny_overrides(synth, tmp_path / "r"))])


def test_an_empty_val_annotation_means_none(synth, tmp_path):
    trainer = Trainer(tiny_config(synth, tmp_path / "run", "data.val_annotation=", "train.epochs=1"), progress=False)
    assert trainer.val_set is None
    assert set(trainer.fit()) == {"train_loss"}


def test_bad_checkpoints_are_named(synth, tmp_path, capsys):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    assert main(["test", "--checkpoint", str(empty)]) == 2
    assert f"{empty} is empty (0 bytes)" in capsys.readouterr().err
    truncated = tmp_path / "truncated.pt"
    torch.save({"model": {"w": torch.ones(1000)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    assert main(["test", "--checkpoint", str(truncated)]) == 2
    assert "is not a readable PyTorch checkpoint" in capsys.readouterr().err
    import argparse

    fairseq_like = tmp_path / "checkpoint_best.pt"
    torch.save({"args": argparse.Namespace(arch="lightconv"), "model": {}, "optimizer_history": []}, fairseq_like)
    assert main(["test", "--checkpoint", str(fairseq_like)]) == 2
    err = capsys.readouterr().err
    assert f"{fairseq_like} is not a seqctx checkpoint" in err and "weights_only=False" not in err


def test_a_list_file_line_with_a_space_names_file_and_line(synth, tmp_path, capsys):
    (tmp_path / "train.txt").write_text("videos/a.mp4 0\nmy video.mp4 1\n")
    code = main(["data", "check", str(tmp_path / "train.txt"), "--root", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and f"{tmp_path / 'train.txt'}, line 2" in err and "no spaces in the path" in err


def test_operator_tour_needs_a_batch_of_two(capsys):
    assert main(["operators", "--batch", "1"]) == 2
    assert "--batch must be >= 2" in capsys.readouterr().err


def test_demo_checks_its_inputs_before_synthesising(tmp_path, capsys):
    assert DEMO_CONFIG.is_file() and DEMO_CONFIG.parent.name == "engine"  # shipped inside the package
    assert main(["demo", "--work-dir", str(tmp_path / "demo"), "--set", "train.epochz=3"]) == 2
    assert "unknown config key 'train.epochz'" in capsys.readouterr().err
    assert not (tmp_path / "demo" / "data").exists()


def test_weights_that_do_not_fit_are_one_short_message():
    from torch import nn

    from seqctx.video.engine.evaluate import load_model_state

    with pytest.raises(CheckpointError, match=r"x.pt does not fit the model: loaded 0 tensors .*missing 1: \[bias\]; "
                       r"unexpected 0: \[\]; shape-mismatched 1: \[weight \(3, 3\) -> \(3, 2\)\]"):  # fmt: skip
        load_model_state(nn.Linear(2, 3), {"weight": torch.zeros(3, 3)}, "x.pt")
