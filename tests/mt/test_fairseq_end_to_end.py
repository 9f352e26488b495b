"""fairseq-preprocess -> seqctx mt train (fairseq-train --user-dir) -> seqctx mt evaluate
(checkpoint averaging, fairseq-generate loading with weights_only, scoring) on real IWSLT'14 text."""

import re
import subprocess
import sys
from pathlib import Path

import yaml

from seqctx.cli import main
from seqctx.mt.recipes import checkpoint_updates
from seqctx.mt.score import score_files

TEXT = Path(__file__).parents[1] / "data" / "text" / "iwslt14_bpe"


def test_tiny_model_learns_then_generates_and_scores(tmp_path, capfd):
    subprocess.run(
        [sys.executable, "-m", "fairseq_cli.preprocess", "--source-lang", "de", "--target-lang", "en",
         "--trainpref", str(TEXT / "train"), "--validpref", str(TEXT / "valid"), "--testpref", str(TEXT / "test"),
         "--destdir", str(tmp_path / "bin"), "--joined-dictionary", "--workers", "1"],
        check=True, capture_output=True,
    )  # fmt: skip
    recipe = {
        "data": str(tmp_path / "bin"), "arch": "lightconv_cgc", "save_dir": str(tmp_path / "ckpt"), "average_last": 2,
        "train": {
            "cpu": True, "seed": 1, "encoder-layers": 2, "decoder-layers": 2, "encoder-embed-dim": 64,
            "decoder-embed-dim": 64, "encoder-ffn-embed-dim": 128, "decoder-ffn-embed-dim": 128,
            "encoder-attention-heads": 4, "decoder-attention-heads": 4, "encoder-kernel-size-list": "[3,7]",
            "decoder-kernel-size-list": "[3,7]", "decoder-conv-type": "lightweight", "encoder-glu": 0,
            "decoder-glu": 0, "share-all-embeddings": True, "optimizer": "adam", "lr": 0.003,
            "lr-scheduler": "inverse_sqrt", "warmup-updates": 40, "criterion": "label_smoothed_cross_entropy",
            "label-smoothing": 0.1, "max-tokens": 3000, "max-update": 200, "log-format": "simple",
            "log-interval": 50, "num-workers": 0,
        },
        "generate": {"cpu": True, "beam": 2, "max-len-b": 30, "batch-size": 50, "remove-bpe": True,
                     "gen-subset": "test"},
    }  # fmt: skip
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["mt", "train", str(path)]) == 0
    log = "".join(capfd.readouterr())
    losses = [float(x) for x in re.findall(r"valid on 'valid' subset \| loss ([0-9.]+)", log)]
    assert len(losses) >= 3 and losses[-1] < losses[0] - 1.0, losses  # validation loss goes down
    assert main(["mt", "evaluate", str(path)]) == 0
    stdout, stderr = capfd.readouterr()
    out = stdout + stderr
    assert "fairseq-generate" in out and "tokenised BLEU" in out and "nrefs:1|case:lc" in out
    assert "not comparable with published SacreBLEU" in out  # no ref_raw: the line says what it scored against
    # fairseq/hydra's config dump and fairseq's log go to the log file, and seqctx's lines are printed once
    log_file = tmp_path / "ckpt" / "generate-test.log"
    assert "'_name'" not in out and "'_name'" in log_file.read_text() and str(log_file) in stdout
    assert out.count("average the last 2 saved states") == 1
    averaged = re.findall(r"^  (checkpoint\S+\.pt)  \((\d+) updates\)$", out, flags=re.M)
    assert len(averaged) == 2 and averaged[-1][1] == "200"  # the final state (max-update) is in
    generated = (tmp_path / "ckpt" / "generate-test.txt").read_text()
    assert len(re.findall(r"^H-\d+\t", generated, flags=re.M)) >= 90  # fairseq drops a few invalid-size pairs
    # the tokenised BLEU is fairseq-generate's own BLEU4 on the same output, to the printed digit
    fairseq_line = re.search(r"BLEU4 = (.*)$", generated, flags=re.M).group(1)
    assert str(score_files(tmp_path / "ckpt" / "generate-test.txt").tokenized) == fairseq_line
    # a rerun continues from checkpoint_last.pt (fairseq's resume), and says so
    assert main(["mt", "train", str(path), "--set", "train.max-update=230"]) == 0
    log = "".join(capfd.readouterr())
    assert "continuing from" in log and "checkpoint_last.pt (200 updates)" in log
    assert re.search(r"Loaded checkpoint .*checkpoint_last\.pt \(epoch \d+ @ 200 updates\)", log)
    assert checkpoint_updates(tmp_path / "ckpt" / "checkpoint_last.pt") == 230
    (tmp_path / "ckpt" / "checkpoint_last.pt").write_bytes(b"cut")
    assert main(["mt", "train", str(path), "--set", "train.max-update=240"]) == 2
    assert "checkpoint_last.pt is not a readable fairseq checkpoint" in "".join(capfd.readouterr())
    assert f"BLEU4 = {fairseq_line}" in stdout
