"""Tiny training runs on the synthetic motion set, shared by the engine and CLI tests."""

from pathlib import Path

from seqctx.video.engine import load_config
from seqctx.video.engine.demo import DEMO_CONFIG


def tiny_overrides(synth: Path, work_dir: Path, *extra: str) -> list[str]:
    """``--set`` items for a ResNet-18/8 TSM on 4 frames of 32x32, 2 epochs, one thread."""
    return [
        "model.name=tsm_r18", "model.num_classes=4", "model.num_segments=4", "model.width=8",
        "model.dropout=0.0", f"data.root={synth / 'videos'}", f"data.train_annotation={synth / 'train.json'}",
        f"data.val_annotation={synth / 'validation.json'}", f"data.labels={synth / 'labels.json'}",
        "data.size=32", "data.scale_size=32", "data.batch_size=4", "data.workers=0", "data.flip=false",
        "train.epochs=2", "train.log_every=1", "train.threads=1", "optim.lr=0.01", "optim.milestones=[1]",
        f"work_dir={work_dir}", *extra,
    ]  # fmt: skip


def tiny_config(synth: Path, work_dir: Path, *extra: str):
    return load_config(DEMO_CONFIG, tiny_overrides(synth, work_dir, *extra))
