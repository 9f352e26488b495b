"""`seqctx analyze` on tiny trained models and a few synthetic videos."""

import json
import os
import subprocess
import sys

import pytest
import torch

from seqctx.cli import main
from seqctx.video.analysis import ANALYSES, selectivity_index
from seqctx.video.analysis.passes import Batch, analysis_loader, data_pass
from seqctx.video.engine import Trainer
from seqctx.video.engine.evaluate import load_trained_model
from tests.video.engine.runs import tiny_config


def trained(synth, run, context):
    cfg = tiny_config(synth, run, "train.epochs=1", f"model.context={context}")
    trainer = Trainer(cfg, progress=False)
    trainer.fit()
    trainer.close()
    return run / "latest.pt"


def test_the_selectivity_index_is_the_formula():
    means = torch.tensor([[0.0, 2.0, 0.0, 1.0], [5.0, 2.0, 0.0, 3.0], [0.0, 2.0, 0.0, 2.0]])  # (K=3 classes, C=4)
    si = selectivity_index(means)
    # one class only -> 1; constant -> 0; silent -> 0; (3 - 1.5) / (3 + 1.5)
    torch.testing.assert_close(si, torch.tensor([1.0, 0.0, 0.0, 1 / 3]))


@pytest.mark.parametrize("context", ["gct", "cgc"])
def test_hooks_leave_the_logits_alone(synth, tmp_path, context):
    ckpt = trained(synth, tmp_path / context, context)
    cfg, model, _ = load_trained_model(None, ckpt)
    loader = analysis_loader(cfg, max_videos=4)
    plain, hooked = [], []
    data_pass(model, loader, torch.device("cpu"), [], Batch(), on_logits=lambda y, _: plain.append(y))
    batch, states = Batch(), {name: {} for name in ANALYSES}
    hooks = [h for name, a in ANALYSES.items() if a.applies(model) is None for h in a.hooks(model, batch, states[name])]
    assert len(hooks) > 10
    data_pass(model, loader, torch.device("cpu"), hooks, batch, on_logits=lambda y, _: hooked.append(y))
    assert all(torch.equal(a, b) for a, b in zip(plain, hooked, strict=True)) and len(plain) == 1


def test_analyze_writes_figures_and_numbers_and_skips_what_does_not_apply(synth, tmp_path, capsys):
    gct = trained(synth, tmp_path / "gct", "gct")
    out = tmp_path / "analysis"
    assert main(["analyze", "--checkpoint", str(gct), "--out", str(out), "--max-videos", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "cgc_gates: skipped (the model has no CGC layer)" in lines
    assert any(line.startswith("gct_gating: gct: 20 GCT layers; mean gamma") for line in lines)
    for name in ("gct_gating", "class_selectivity", "channel_sparsity"):
        assert (out / f"{name}.png").stat().st_size > 10_000, name
    gct_json = json.loads((out / "gct_gating.json").read_text())["models"]["gct"]
    first = gct_json["layers"][0]
    assert first["layer"] == "trunk.ctx1" and len(gct_json["layers"]) == 1 + 8 * 2 + 3  # ResNet-18: shortcuts too
    assert set(first) == {"layer", "channels", "gamma_mean", "gamma_std", "gamma_density", "variance_ratio"}
    assert abs(sum(first["gamma_density"]) - 1) < 1e-6 and first["variance_ratio"] > 0
    sel = json.loads((out / "class_selectivity.json").read_text())["models"]["gct"]["blocks"]
    assert [b["block"] for b in sel] == ["trunk.layer4.0", "trunk.layer4.1"] and all(b["classes"] == 4 for b in sel)
    assert all(0 <= v <= 1 for b in sel for v in b["index"]) and len(sel[0]["index"]) == 64
    sparse = json.loads((out / "channel_sparsity.json").read_text())["models"]["gct"]
    assert [d["dropped"] for d in sparse["dropping"]] == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    assert all(0 <= layer["sparsity"] <= 1 for layer in sparse["layers"]) and len(sparse["layers"]) == 20
    assert main(["analyze", "--checkpoint", str(gct), "--out", str(out), "--only", "gtc"]) == 2
    assert "unknown analysis 'gtc' (--only); valid: gct_gating" in capsys.readouterr().err


def test_cgc_gates_and_a_comparison(synth, tmp_path, capsys):
    cgc, base = trained(synth, tmp_path / "cgc", "cgc"), trained(synth, tmp_path / "base", "null")
    out = tmp_path / "analysis"
    args = ["analyze", "--checkpoint", str(cgc), "--out", str(out), "--max-videos", "4", "--compare", str(base)]
    assert main([*args, "--only", "cgc_gates,class_selectivity,channel_sparsity"]) == 0
    lines = capsys.readouterr().out
    assert "cgc_gates: cgc: 17 CGC layers; gate mean" in lines and "across time slices" in lines
    gates = json.loads((out / "cgc_gates.json").read_text())["models"]
    assert list(gates) == ["cgc"]  # the baseline has no CGC layer to show
    layer = gates["cgc"]["layers"][1]
    assert layer["time_slices"] == 3 and layer["std_across_videos"] > 0 and layer["std_across_time_slices"] > 0
    assert len(gates["cgc"]["pca"]) == 4 and {p["label"] for p in gates["cgc"]["pca"]} == {0, 1, 2, 3}
    sel = json.loads((out / "class_selectivity.json").read_text())["models"]
    assert list(sel) == ["cgc", "base (compare)"]
    curves = json.loads((out / "channel_sparsity.json").read_text())["models"]
    assert all(len(c["dropping"]) == 6 for c in curves.values())


def test_two_processes_give_one_process_numbers(synth, tmp_path):
    ckpt = trained(synth, tmp_path / "gct", "gct")
    args = [
        "analyze",
        "--checkpoint",
        str(ckpt),
        "--max-videos",
        "3",
        "--set",
        f"data.val_annotation={synth / 'train.json'}",
    ]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29535", "-m", "seqctx",
           *args, "--out", str(tmp_path / "two")]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("class_selectivity:") == 1  # rank 0 prints
    names = ("gct_gating", "class_selectivity", "channel_sparsity")
    one, two = ({n: json.loads((tmp_path / d / f"{n}.json").read_text())["models"]["gct"] for n in names}
                for d in ("one", "two"))  # fmt: skip
    for x, y in zip(one["gct_gating"]["layers"], two["gct_gating"]["layers"], strict=True):
        assert x["variance_ratio"] == pytest.approx(y["variance_ratio"], rel=1e-6)
    for x, y in zip(one["class_selectivity"]["blocks"], two["class_selectivity"]["blocks"], strict=True):
        assert x["index"] == pytest.approx(y["index"], abs=1e-9)
    a, b = one["channel_sparsity"], two["channel_sparsity"]
    assert [x["sparsity"] for x in a["layers"]] == pytest.approx([x["sparsity"] for x in b["layers"]])
    assert a["dropping"] == b["dropping"]  # top-1 over the same 3 videos, split 2 + 1
