"""seqctx export: every family x context to ONNX, run by onnxruntime at batch 1, 2 and 3 from one
file against PyTorch; the TSM shift against its reference; the metadata; torch.export programs;
an older checkpoint; predict --onnx; the errors a user meets."""

import json

import onnx
import pytest
import torch

from seqctx.cli import main
from seqctx.errors import ConfigError, UserError
from seqctx.modules import temporal_shift
from seqctx.video.engine import Trainer
from seqctx.video.engine.checkpoint import load_checkpoint, save_checkpoint
from seqctx.video.export import OnnxRecognizer, export_checkpoint, verify_export
from seqctx.video.models import MODELS

from .engine.runs import tiny_config

FAMILIES = {"tsn_r18": 4, "tsm_r18": 4, "p3d_r50": 4, "i3d_r50": 4}  # frames: P3D/I3D pool time by 2 twice
CONTEXTS = [None, "gct", "se", "ge", "ge_theta", "ge_theta_plus", "ce", "cgc"]


def context_for(name, context):
    """The model's CGC flavour where it has no plain `cgc` (P3D: cgc1d3d)."""
    if context == "cgc" and "cgc" not in MODELS[name].contexts:
        return "cgc1d3d"
    return context


def trained_checkpoint(path, name, context, frames, size=32):
    """A checkpoint as `seqctx train` writes it, of a width-8 model with nonzero BN statistics
    (a few training-mode forwards) so that eval mode is not the identity."""
    from seqctx.video.engine.builders import make_model
    from seqctx.video.engine.config import config_from_dict

    model = {"name": name, "num_classes": 5, "num_segments": frames, "width": 8, "context": context, "dropout": 0.0}
    cfg = config_from_dict({"model": model, "data": {"size": size, "scale_size": size}})
    model = make_model(cfg).train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(3, 3, frames, size, size))
    save_checkpoint({"model": model.state_dict(), "config": cfg.to_dict(), "classes": [f"c{i}" for i in range(5)],
                     "epoch": 1, "iteration": 0}, path)  # fmt: skip
    return path


PAIRS = [(name, context_for(name, c)) for name in FAMILIES for c in CONTEXTS]


def test_every_family_takes_every_context():
    assert all(c is None or c in MODELS[name].contexts for name, c in PAIRS)


@pytest.mark.parametrize(("name", "context"), PAIRS, ids=[f"{n}-{c or 'none'}" for n, c in PAIRS])
def test_every_model_exports_and_onnxruntime_equals_pytorch_at_any_batch(tmp_path, name, context):
    ckpt = trained_checkpoint(tmp_path / "latest.pt", name, context, FAMILIES[name])
    exported, recognizer = export_checkpoint(ckpt, tmp_path / "model.onnx", optimize=False)  # the CLI test optimises
    verify_export(exported, recognizer, batches=(1, 2, 3))
    assert set(exported.max_abs_diff) == {1, 2, 3}
    assert max(exported.max_abs_diff.values()) < 1e-4, exported.max_abs_diff
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "model.onnx")).metadata_props}
    assert json.loads(meta["classes"]) == [f"c{i}" for i in range(5)]
    assert json.loads(meta["seqctx"])["input"].startswith("uint8 (N, T, H, W, 3)")


def test_the_exported_tsm_shift_is_the_shift(tmp_path):
    """The official TSM code's in-place shift exports as a constant with the tracer; ours must move
    the channels in the graph: an exported shift equals the reference on other inputs than the
    example it was exported with."""

    class Shift(torch.nn.Module):
        def forward(self, x):
            return temporal_shift(x, 4)

    example = torch.randn(8, 16, 3, 3)
    program = torch.onnx.export(Shift(), (example,), dynamo=True, dynamic_shapes=({0: torch.export.Dim("nt")},))
    program.save(str(tmp_path / "shift.onnx"))
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "shift.onnx"), providers=["CPUExecutionProvider"])
    for n in (1, 3):
        x = torch.randn(n * 4, 16, 3, 3)
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        expected = torch.zeros_like(x).view(n, 4, 16, 3, 3)
        v = x.view(n, 4, 16, 3, 3)
        expected[:, :-1, :2], expected[:, 1:, 2:4], expected[:, :, 4:] = v[:, 1:, :2], v[:, :-1, 2:4], v[:, :, 4:]
        assert torch.equal(torch.from_numpy(got), expected.view_as(x))


def test_pt2_export_runs_with_torch_export_load(tmp_path):
    ckpt = trained_checkpoint(tmp_path / "latest.pt", "tsm_r18", "cgc", 4)
    exported, recognizer = export_checkpoint(ckpt, tmp_path / "model.pt2", format="pt2")
    verify_export(exported, recognizer, batches=(1, 3))
    assert max(exported.max_abs_diff.values()) < 1e-5
    extra = {"seqctx.json": ""}
    torch.export.load(str(tmp_path / "model.pt2"), extra_files=extra)
    assert json.loads(extra["seqctx.json"])["classes"] == [f"c{i}" for i in range(5)]


def test_a_trained_run_exports_from_the_cli_and_predict_onnx_gives_the_pytorch_top5(synth, tmp_path, capsys):
    run = tmp_path / "run"  # TSM: the shift in the file (CGC is in the matrix above and in bench_export.py)
    Trainer(tiny_config(synth, run, "train.epochs=1"), progress=False).fit()
    # an older run's checkpoint: no class list, a config without the keys added since
    old = load_checkpoint(run / "latest.pt")
    for key in ("classes", "metrics_lines", "loss_total", "loss_window"):
        old.pop(key, None)
    for key in ("keep_checkpoints", "resume", "stop_signals", "mixup", "cutmix", "ema", "cudnn_benchmark"):
        old["config"]["train"].pop(key)
    save_checkpoint(old, tmp_path / "old.pt")
    assert main(["export", "--checkpoint", str(tmp_path / "old.pt"), "--out", str(tmp_path / "old.onnx"),
                 "--verify", "--no-optimize"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "4 frames of 32x32" in out and out.count("largest |onnxruntime - PyTorch|") == 3
    assert main(["export", "--checkpoint", str(run / "latest.pt"), "--out", str(tmp_path / "m.onnx")]) == 0
    assert OnnxRecognizer(tmp_path / "m.onnx").classes == load_checkpoint(run / "latest.pt")["classes"]
    videos = sorted((synth / "videos").glob("*.mp4"))[:3]
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(run / "latest.pt"), *map(str, videos)]) == 0
    torch_lines = capsys.readouterr().out.splitlines()
    assert main(["predict", "--onnx", str(tmp_path / "m.onnx"), *map(str, videos)]) == 0
    onnx_lines = capsys.readouterr().out.splitlines()

    def names(lines):
        return [line.split(maxsplit=1)[1] if line.startswith("  ") else line for line in lines]

    assert names(onnx_lines) == names(torch_lines)  # the same videos, the same top-5 in the same order
    scores = [float(line.split()[0]) for line in onnx_lines if line.startswith("  ")]
    assert scores == pytest.approx([float(line.split()[0]) for line in torch_lines if line.startswith("  ")], abs=2e-3)


def test_what_users_get_wrong_is_an_answer(tmp_path, capsys):
    with pytest.raises(UserError, match="no checkpoint at"):
        export_checkpoint(tmp_path / "missing.pt", tmp_path / "m.onnx")
    ckpt = trained_checkpoint(tmp_path / "latest.pt", "tsn_r18", None, 4)
    with pytest.raises(ConfigError, match="--format must be one of onnx, pt2; got 'tflite'"):
        export_checkpoint(ckpt, tmp_path / "m.tflite", format="tflite")
    assert main(["export", "--checkpoint", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "m.onnx")]) == 2
    assert main(["predict", str(tmp_path / "v.mp4")]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint at" in err and "--checkpoint CKPT (PyTorch) or --onnx FILE" in err
    io = [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1]) for n in ("x", "y")]
    identity = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g", io[:1], io[1:])
    plain = onnx.helper.make_model(identity)
    (tmp_path / "plain.onnx").write_bytes(plain.SerializeToString())
    with pytest.raises(UserError, match="not written by `seqctx export`"):
        OnnxRecognizer(tmp_path / "plain.onnx")
