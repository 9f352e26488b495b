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
    out = capsys.readouterr().out
    assert "--arch lightconv_cgc_iwslt_de_en" in out and "--max-update 10" in out and "--weight-softmax True" in out
    assert main(["mt", "evaluate", RECIPE, "--dry-run"]) == 0
    assert "--beam 6" in capsys.readouterr().out


def test_bad_arguments_exit_with_usage():
    with pytest.raises(SystemExit):
        main(["train"])
