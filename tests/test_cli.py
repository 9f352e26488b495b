from pathlib import Path

import pytest

from seqctx.cli import main

RECIPE = str(Path(__file__).parents[1] / "mt_configs" / "iwslt14_lightconv_cgc.yaml")


def test_operators_tour(capsys):
    assert main(["operators", "--channels", "16", "--size", "8", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert set(rows) >= {"gct", "se", "ge", "ge_theta", "ge_theta_plus", "ce", "cgc"}
    assert "True" in rows["gct"] and "False" in rows["se"]  # only GCT is an identity at init


def test_models_listing(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "p3d_r50    contexts: gct, gct_all, cgc1d, cgc3d, cgc1d3d" in out


def test_mt_commands_print_what_they_run(capsys, tmp_path):
    from seqctx.mt import user_dir

    assert main(["mt", "user-dir"]) == 0
    assert capsys.readouterr().out.strip() == str(user_dir())
    assert main(["mt", "train", RECIPE, "--dry-run", "--set", "train.max-update=10"]) == 0
    err = capsys.readouterr().err  # the command, logged
    assert "--arch lightconv_cgc_iwslt_de_en" in err and "--max-update 10" in err and "--weight-softmax True" in err
    assert main(["mt", "evaluate", RECIPE, "--dry-run"]) == 0
    assert "--beam 6" in capsys.readouterr().err


def test_bad_arguments_exit_with_usage():
    with pytest.raises(SystemExit):
        main(["train"])


@pytest.mark.parametrize(
    "args",
    [["data", "check", "list.txt", "--short-side", "0"], ["data", "check", "list.txt", "--short-side", "wide"],
     ["predict", "--checkpoint", "x.pt", "--stream", "a.mp4", "--smoothing", "0"]],
)  # fmt: skip
def test_counts_and_sizes_below_one_are_usage_errors(args, capsys):
    with pytest.raises(SystemExit) as info:
        main(args)
    err = capsys.readouterr().err
    assert info.value.code == 2 and ("expected a positive number, got" in err or "expected a whole number, got" in err)


def test_train_on_your_own_videos_as_the_readme_says(tmp_path, capsys, monkeypatch):
    """The README's "Train on your own videos" commands, in a fresh folder, with a smaller model."""
    import shutil

    shutil.copytree(Path(__file__).parents[1] / "video_configs", tmp_path / "video_configs")
    monkeypatch.chdir(tmp_path)
    assert main(["data", "synth", "data/my_videos", "--classes", "4", "--videos-per-class", "4", "--frames", "8",
                 "--size", "32"]) == 0  # fmt: skip
    assert main(["data", "check", "data/my_videos/train.txt", "--root", "data/my_videos",
                 "--labels", "data/my_videos/classes.txt"]) == 0  # fmt: skip
    small = ["model.num_classes=4", "model.width=8", "model.num_segments=4",
             "data.size=32", "data.scale_size=32", "data.batch_size=4", "data.workers=0", "train.epochs=1",
             "train.eval_every=1", "train.threads=1"]  # fmt: skip
    assert main(["train", "video_configs/my_videos_tsm_r18.yaml", *[x for s in small for x in ("--set", s)]]) == 0
    capsys.readouterr()
    assert main(["test", "--checkpoint", "work_dirs/my_videos_tsm_r18/best.pt"]) == 0
    assert capsys.readouterr().out.startswith("4 videos evaluated: top-1")
    video = "data/my_videos/videos/0000000.mp4"
    assert main(["predict", "--checkpoint", "work_dirs/my_videos_tsm_r18/best.pt", video]) == 0
    assert capsys.readouterr().out.splitlines()[0] == video
