"""Recipes: unknown keys and fairseq options fail before fairseq runs; averaging takes the last
saved states by update count, the final one included."""

from pathlib import Path

import pytest
import torch

from seqctx.cli import main
from seqctx.errors import ConfigError
from seqctx.mt.recipes import average_checkpoints, check_options, last_checkpoints, load_recipe, train_command

RECIPE = Path(__file__).parents[2] / "mt_configs" / "multi30k_lightconv_cgc_small.yaml"


def test_unknown_recipe_keys_name_the_valid_ones(capsys):
    with pytest.raises(ConfigError, match=r"--set trian.lr: unknown recipe key 'trian'; valid: top-level data, arch"):
        load_recipe(RECIPE, ["trian.lr=0.1"])
    with pytest.raises(ConfigError, match="unknown recipe key 'lr'"):
        load_recipe(RECIPE, ["lr=0.1"])
    assert load_recipe(RECIPE, ["train.lr=0.1", "average_last=3"])["train"]["lr"] == 0.1
    assert main(["mt", "train", str(RECIPE), "--dry-run", "--set", "trian.lr=0.1"]) == 2
    assert "unknown recipe key 'trian'" in capsys.readouterr().err


def test_fairseq_options_are_checked_by_fairseqs_parser(capsys):
    recipe = load_recipe(RECIPE, ["train.lrr=0.1"])
    with pytest.raises(ConfigError, match=r"fairseq-train rejects the recipe's options: .*--lrr.*did you mean --lr"):
        check_options(train_command(recipe))
    check_options(train_command(load_recipe(RECIPE)))  # the shipped recipe passes
    assert main(["mt", "train", str(RECIPE), "--dry-run", "--set", "train.lrr=0.1"]) == 2
    assert "did you mean --lr" in capsys.readouterr().err


def fake_checkpoint(path: Path, updates: int, value: float) -> None:
    """What fairseq saves, reduced to the fields averaging reads."""
    torch.save({"model": {"w": torch.full((3,), value)}, "optimizer_history": [{"num_updates": updates}]}, path)


def test_averaging_takes_the_last_states_by_update_count(tmp_path):
    fake_checkpoint(tmp_path / "checkpoint1.pt", 400, 1.0)
    fake_checkpoint(tmp_path / "checkpoint2.pt", 800, 2.0)
    fake_checkpoint(tmp_path / "checkpoint10.pt", 4000, 10.0)  # 10 > 2 by number, not by name
    fake_checkpoint(tmp_path / "checkpoint_last.pt", 4300, 11.0)  # stopped by max-update mid-epoch
    fake_checkpoint(tmp_path / "checkpoint_best.pt", 800, 2.0)
    chosen = last_checkpoints(tmp_path, 2)
    assert [(p.name, u) for p, u in chosen] == [("checkpoint10.pt", 4000), ("checkpoint_last.pt", 4300)]
    average_checkpoints([p for p, _ in chosen], tmp_path / "avg.pt")
    assert torch.load(tmp_path / "avg.pt", weights_only=True)["model"]["w"].tolist() == [10.5] * 3
    # one epoch, ended by max-update at its end: checkpoint_last is the same state as checkpoint1
    solo = tmp_path / "solo"
    solo.mkdir()
    fake_checkpoint(solo / "checkpoint1.pt", 1500, 1.0)
    fake_checkpoint(solo / "checkpoint_last.pt", 1500, 1.0)
    assert [(p.name, u) for p, u in last_checkpoints(solo, 5)] == [("checkpoint1.pt", 1500)]
    with pytest.raises(ConfigError, match="no fairseq checkpoints in"):
        last_checkpoints(tmp_path / "none", 5)


def test_the_world_size_is_stated_and_update_freq_keeps_the_papers_tokens_per_update():
    recipe = load_recipe(RECIPE)
    cmd = train_command(recipe)
    i = cmd.index("--distributed-world-size")
    assert cmd[i : i + 4] == ["--distributed-world-size", "1", "--update-freq", "1"]
    spread = load_recipe(RECIPE, ["train.max-tokens=500", "train.update-freq=8", "gpus=4"])
    cmd = train_command(spread)
    i = cmd.index("--distributed-world-size")
    assert cmd[i : i + 4] == ["--distributed-world-size", "4", "--update-freq", "2"]  # 500 x 2 x 4 = 4000 tokens
    assert cmd.count("--update-freq") == 1
    check_options(cmd)
    with pytest.raises(ConfigError, match=r"gpus=8 cannot keep .* paper_gpus=1 x update-freq=1 = 1 must be a multiple"):
        train_command(load_recipe(RECIPE, ["gpus=8"]))


def test_the_architectures_keep_the_users_conv_types():
    from fairseq import options

    import seqctx.mt.models  # noqa: F401  (registers lightconv_cgc)

    def parsed(*extra):
        parser = options.get_training_parser()
        return options.parse_args_and_arch(parser, input_args=["data-bin", "--arch", *extra])

    iwslt = parsed("lightconv_cgc_iwslt_de_en")
    assert (iwslt.encoder_conv_type, iwslt.decoder_conv_type) == ("lightweight", "lightweight")
    mine = parsed("lightconv_cgc_iwslt_de_en", "--decoder-conv-type", "dynamic")
    assert mine.decoder_conv_type == "dynamic"  # was overwritten with lightweight
    base = parsed("lightconv_cgc")
    assert (base.encoder_conv_type, base.decoder_conv_type) == ("lightweight", "dynamic")


def test_fairseq_checkpoint_types_are_allowed_in_a_scope_only(tmp_path):
    """Importing the model and checking a recipe leave torch's allow-list as it was; fairseq's
    checkpoint types load inside ``fairseq_checkpoints()`` and nowhere else."""
    import subprocess
    import sys

    script = f"""
import argparse, torch
before = list(torch.serialization.get_safe_globals())
import seqctx.mt.models
from seqctx.mt.recipes import check_options, load_recipe, train_command
from seqctx.mt.safe_load import fairseq_checkpoints
check_options(train_command(load_recipe({str(RECIPE)!r})))
assert torch.serialization.get_safe_globals() == before, torch.serialization.get_safe_globals()
path = {str(tmp_path / "ns.pt")!r}
torch.save({{"args": argparse.Namespace(lr=0.1)}}, path)
with fairseq_checkpoints():
    assert torch.load(path, weights_only=True)["args"].lr == 0.1
assert torch.serialization.get_safe_globals() == before
try:
    torch.load(path, weights_only=True)
except Exception as e:
    assert "Namespace" in str(e), e
else:
    raise AssertionError("loaded a Namespace outside the scope")
"""
    subprocess.run([sys.executable, "-c", script], check=True)


def test_raw_references_are_checked_before_generating(tmp_path, capsys):
    missing = tmp_path / "raw" / "test.en"
    save_dir = f"save_dir={tmp_path / 'ckpt'}"
    assert main(["mt", "evaluate", str(RECIPE), "--set", f"ref_raw={missing}", "--set", save_dir]) == 2
    err = capsys.readouterr().err
    assert f"ref_raw {missing} not found" in err and "--set ref_raw=null" in err
    missing.parent.mkdir()
    missing.write_text("A raw reference.\n")
    assert main(["mt", "evaluate", str(RECIPE), "--set", f"ref_raw={missing}", "--set", save_dir]) == 2
    assert "no fairseq checkpoints in" in capsys.readouterr().err  # found: the next step speaks
    assert main(["mt", "evaluate", str(RECIPE), "--dry-run", "--set", "ref_raw=null"]) == 0
    assert "generate-test.log" in capsys.readouterr().err  # where fairseq-generate's log goes
