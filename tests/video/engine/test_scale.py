"""The engine at the size users train at: chunked evaluation equal to one pass, validation views of
their own, the test crop size, the run's class list, and what users type that must be an answer,
not a traceback."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from seqctx.cli import main
from seqctx.errors import CheckpointError
from seqctx.video.analysis.passes import across_classes
from seqctx.video.data.datasets import ssv2_template
from seqctx.video.engine import Trainer
from seqctx.video.engine.builders import make_dataset

from .runs import tiny_config, tiny_overrides


def sets(*items):
    return [x for item in items for x in ("--set", item)]


@pytest.fixture(scope="module")
def tsm_run(synth, tmp_path_factory):
    run = tmp_path_factory.mktemp("tsm")
    with Trainer(tiny_config(synth, run, "train.epochs=1"), progress=False) as trainer:
        trainer.fit()
    return run


def test_chunked_evaluation_equals_one_pass(tsm_run, tmp_path, capsys):
    ckpt = str(tsm_run / "latest.pt")
    views = ["--clips", "2", "--crops", "3"]  # 6 views a video
    outputs = {}
    for cap in (24, 2, 3, 4):  # one forward for all; 3 or 2 chunks a video; chunks across videos
        out = tmp_path / f"cap{cap}.csv"
        assert (
            main(["test", "--checkpoint", ckpt, *views, "--out", str(out), "--set", f"data.test_batch_clips={cap}"])
            == 0
        )
        outputs[cap] = out
    capsys.readouterr()
    one_pass = outputs[24].read_bytes()
    assert all(outputs[cap].read_bytes() == one_pass for cap in (2, 3, 4))  # same labels, predictions, scores
    assert json.loads(outputs[24].with_suffix(".json").read_text())["crops"] == 3


def test_validation_views_and_the_test_crop_size(synth, tmp_path):
    cfg = tiny_config(synth, tmp_path / "run", "data.test_clips=2", "data.test_crops=3", "data.test_crop_size=24")
    val = make_dataset(cfg, "val")  # what training validates with: 1 clip, centre crop of size
    test = make_dataset(cfg, "test")  # seqctx test's protocol
    assert val[0][0].shape == (1, 3, 4, 32, 32)
    assert test[0][0].shape == (2 * 3, 3, 4, 24, 24)
    bad = tiny_overrides(synth, tmp_path / "run", "data.test_crop_size=40")
    assert main(["train", str(Path(__file__).parents[3] / "seqctx/video/engine/demo_synthetic.yaml"), *sets(*bad)]) == 2


def test_a_ge_theta_model_tests_at_the_size_it_was_trained_at(synth, tmp_path, capsys):
    run = tmp_path / "ge"
    with Trainer(tiny_config(synth, run, "train.epochs=1", "model.context=ge_theta"), progress=False) as trainer:
        trainer.fit()
    ckpt = str(run / "latest.pt")
    assert main(["test", "--checkpoint", ckpt, "--set", "data.test_crop_size=32"]) == 0
    assert main(["test", "--checkpoint", ckpt, "--set", "data.test_crop_size=24"]) == 2
    err = capsys.readouterr().err
    assert "data.test_crop_size=24: this model's GE-theta gathers" in err and "Use 32" in err
    with pytest.raises(CheckpointError, match="data.size=24"):
        from seqctx.video.engine.evaluate import load_trained_model

        load_trained_model(None, ckpt, ["data.size=24", "data.scale_size=24"])


def test_the_runs_class_list_is_saved_and_used_by_every_split(synth, tsm_run, tmp_path, capsys):
    names = (tsm_run / "classes.txt").read_text().splitlines()
    ckpt = torch.load(tsm_run / "latest.pt", weights_only=True)
    assert names == ckpt["classes"] and len(names) == 4
    # a Kinetics-format validation CSV holding one class only (a subset, or what could be downloaded):
    # its label names map through the run's list, not through a list sorted from this file alone
    entries = [
        e for e in json.loads((synth / "validation.json").read_text()) if ssv2_template(e["template"]) == names[2]
    ]
    root = tmp_path / "videos"
    root.mkdir()
    for e in entries:
        shutil.copy(synth / "videos" / f"{e['id']}.mp4", root / f"{e['id']}_000000_000010.mp4")
    (tmp_path / "val.csv").write_text(
        "label,youtube_id,time_start,time_end,split\n" + "".join(f'"{names[2]}",{e["id"]},0,10,val\n' for e in entries)
    )
    out = tmp_path / "p.csv"
    overrides = ["data.format=kinetics", f"data.root={root}", f"data.val_annotation={tmp_path / 'val.csv'}",
                 "data.labels=null"]  # fmt: skip
    assert main(["test", "--checkpoint", str(tsm_run / "latest.pt"), "--out", str(out), *sets(*overrides)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert (
        len(rows) == len(entries)
        and {r["label"] for r in rows} == {"2"}
        and {r["label_name"] for r in rows} == {names[2]}
    )
    (tmp_path / "other.csv").write_text("label,youtube_id,time_start,time_end,split\nnot a class,x,0,10,val\n")
    assert main(["test", "--checkpoint", str(tsm_run / "latest.pt"),
                 *sets(*overrides, f"data.val_annotation={tmp_path / 'other.csv'}")]) == 2  # fmt: skip
    assert (
        "other.csv, line 2: label 'not a class' is not in the run's class list (4 classes)" in capsys.readouterr().err
    )


def test_what_users_type_is_answered_not_a_traceback(synth, tsm_run, tmp_path, capsys):
    ckpt = str(tsm_run / "latest.pt")
    for clips, message in (("0", "--clips must be >= 1, got 0"), ("4", "--clips=4: segment sampling")):
        assert main(["test", "--checkpoint", ckpt, "--clips", clips]) == 2
        err = capsys.readouterr().err
        assert err.startswith("seqctx: error: ") and message in err and "Traceback" not in err
    # a video named twice in the evaluation list: refused at load, naming it, before any work
    entries = json.loads((synth / "validation.json").read_text())
    (tmp_path / "dup.json").write_text(json.dumps(entries + entries[:1]))
    assert main(["test", "--checkpoint", ckpt, "--set", f"data.val_annotation={tmp_path / 'dup.json'}"]) == 2
    assert f"{entries[0]['id']!r} on lines 1, {len(entries) + 1}" in capsys.readouterr().err
    # predict a folder: the videos in it
    folder = tmp_path / "clips"
    folder.mkdir()
    for e in entries[:2]:
        shutil.copy(synth / "videos" / f"{e['id']}.mp4", folder)
    assert main(["predict", "--checkpoint", ckpt, str(folder)]) == 0
    out = capsys.readouterr().out
    assert all(f"{folder / e['id']}.mp4" in out for e in entries[:2])
    (tmp_path / "empty").mkdir()
    assert main(["predict", "--checkpoint", ckpt, str(tmp_path / "empty")]) == 2
    assert "is a folder without video files" in capsys.readouterr().err
    # a key given twice in one YAML mapping
    (tmp_path / "dup.yaml").write_text("train:\n  epochs: 1\n  seed: 0\n  epochs: 3\n")
    assert main(["train", str(tmp_path / "dup.yaml")]) == 2
    assert "key 'epochs' on line 4 is given twice (first on line 2)" in capsys.readouterr().err


def test_outputs_and_files_that_cannot_be_used_are_one_message_before_any_work(synth, tsm_run, tmp_path, capsys):
    ckpt = str(tsm_run / "latest.pt")
    a_file = tmp_path / "notes.txt"
    a_file.write_text("my notes\n")
    (tmp_path / "folder").mkdir()
    cases = [
        (
            ["test", "--checkpoint", ckpt, "--out", str(tmp_path / "folder")],
            "--out {d}/folder is a folder; name a file",
        ),
        (["test", "--checkpoint", ckpt, "--out", str(a_file / "p.csv")], "{d}/notes.txt is a file, not a folder"),
        (["export", "--checkpoint", ckpt, "--out", str(tmp_path / "folder")], "--out {d}/folder is a folder"),
        (["analyze", "--checkpoint", ckpt, "--out", str(a_file)], "--out {d}/notes.txt is a file; name a folder"),
        (["train", str(tsm_run / "config.yaml"), "--work-dir", str(a_file)], "work_dir {d}/notes.txt is a file"),
        (["predict", "--onnx", str(a_file), ckpt], "{d}/notes.txt is not a readable ONNX file (9 bytes"),
        (["predict", "--checkpoint", str(a_file), ckpt], "{d}/notes.txt is not a seqctx checkpoint"),
    ]
    for args, message in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("seqctx: error: ") and message.format(d=tmp_path) in err and "Traceback" not in err
        assert err.count("\n") == 1, err  # one line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "notes.txt"] and a_file.read_text() == "my notes\n"
    first, second = sorted((synth / "videos").glob("*.mp4"))[:2]
    assert main(["predict", str(first), "--checkpoint", ckpt, str(second)]) == 0  # videos before and after options
    out = capsys.readouterr().out
    assert str(first) in out and str(second) in out


def test_data_synth_never_writes_over_a_users_files(tmp_path, capsys):
    (tmp_path / "train.txt").write_text("my/own.mp4 0\n")
    small = ["--classes", "2", "--videos-per-class", "2", "--frames", "8", "--size", "32"]
    assert main(["data", "synth", str(tmp_path), *small]) == 2
    assert "already holds train.txt" in capsys.readouterr().err
    assert (tmp_path / "train.txt").read_text() == "my/own.mp4 0\n"
    assert main(["data", "synth", str(tmp_path), *small, "--overwrite"]) == 0
    assert (tmp_path / "train.txt").read_text() != "my/own.mp4 0\n"


def test_a_run_that_failed_before_training_is_not_a_run_and_an_epoch_is_kept_before_validation(synth, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model: {}\n")  # all a run that failed at start leaves
    cfg = tiny_config(synth, run, "train.epochs=1")

    class ValidationFails(Trainer):
        def validate(self, stop=None):
            raise RuntimeError("killed during validation")

    with ValidationFails(cfg, progress=False) as trainer:  # no --overwrite needed
        with pytest.raises(RuntimeError, match="killed during validation"):
            trainer.fit()
    saved = torch.load(run / "latest.pt", weights_only=True)
    assert saved["epoch"] == 1 and saved["validated"] is False  # the trained epoch survived, its validation owed


def test_analysis_videos_are_drawn_across_classes(synth, tsm_run, tmp_path, capsys):
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, -1])
    assert across_classes(labels, 4) == [0, 4, 6, 9]  # one video of each class first, in file order
    assert across_classes(labels, 6) == [0, 1, 4, 5, 6, 9]
    ckpt = str(tsm_run / "latest.pt")
    assert main(["analyze", "--checkpoint", ckpt, "--out", str(tmp_path / "a"), "--max-videos", "0"]) == 2
    assert "--max-videos must be >= 1" in capsys.readouterr().err
    entries = [e for e in json.loads((synth / "validation.json").read_text())][:1]
    (tmp_path / "one.json").write_text(json.dumps(entries))
    assert main(["analyze", "--checkpoint", ckpt, "--out", str(tmp_path / "a"),
                 "--set", f"data.val_annotation={tmp_path / 'one.json'}"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "class_selectivity: skipped (it compares classes, and the 1 videos read hold 1 labelled class(es))" in out
    assert "channel_sparsity: skipped (it compares classes" in out
