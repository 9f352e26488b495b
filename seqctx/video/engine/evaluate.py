"""Evaluation: multi-clip x multi-crop testing with scores averaged per video, top-1/top-5 and
mean class accuracy, per-video predictions as CSV, and top-5 predictions for any video."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from .config import Config


@dataclass
class EvalResult:
    top1: float
    top5: float
    mean_class_accuracy: float
    num_videos: int
    scores: torch.Tensor  # (V, K) softmax averaged over views
    labels: torch.Tensor  # (V,)
    ids: list[str]

    def metrics(self) -> dict[str, float]:
        return {"top1": self.top1, "top5": self.top5, "mean_class_accuracy": self.mean_class_accuracy}


def accuracy_metrics(scores: torch.Tensor, labels: torch.Tensor) -> tuple[float, float, float]:
    """Top-1, top-5 (in %) and the mean over classes of per-class top-1 (labelled videos only)."""
    keep = labels >= 0
    scores, labels = scores[keep], labels[keep]
    if len(labels) == 0:
        return float("nan"), float("nan"), float("nan")
    k = min(5, scores.shape[1])
    top = scores.topk(k, dim=1).indices
    top1 = (top[:, 0] == labels).float()
    top5 = (top == labels[:, None]).any(1).float()
    per_class = [top1[labels == c].mean() for c in labels.unique()]
    return 100 * top1.mean().item(), 100 * top5.mean().item(), 100 * torch.stack(per_class).mean().item()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    progress: bool = True,
) -> EvalResult:
    """Runs every view of every video (clips ``(N, 3, T, H, W)`` or ``(N, V, 3, T, H, W)``) and
    averages the softmax scores of a video's views."""
    model.eval()
    all_scores, all_labels, ids = [], [], []
    for clips, labels, meta in tqdm(loader, desc="evaluating", disable=not progress, leave=False):
        clips = clips.to(device, non_blocking=True)
        views = clips.shape[1] if clips.dim() == 6 else 1
        flat = clips.flatten(0, 1) if clips.dim() == 6 else clips
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(flat).float()
        scores = logits.softmax(-1).view(clips.shape[0], views, -1).mean(1)
        all_scores.append(scores.cpu())
        all_labels.append(torch.as_tensor(labels))
        ids += list(meta["id"])
    scores, labels = torch.cat(all_scores), torch.cat(all_labels)
    top1, top5, mca = accuracy_metrics(scores, labels)
    return EvalResult(top1, top5, mca, len(ids), scores, labels, ids)


def write_predictions(result: EvalResult, classes: Sequence[str], path: str | Path) -> None:
    """One row per video: id, label, predicted class, its score and the top-5 class names."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def name(i: int) -> str:
        return classes[i] if 0 <= i < len(classes) else str(i)

    k = min(5, result.scores.shape[1])
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "label", "label_name", "pred", "pred_name", "score", "top5"])
        for vid, label, s in zip(result.ids, result.labels.tolist(), result.scores, strict=True):
            top = s.topk(k)
            pred = int(top.indices[0])
            w.writerow([vid, label, name(label) if label >= 0 else "", pred, name(pred), f"{top.values[0]:.4f}",
                        "|".join(name(int(i)) for i in top.indices)])  # fmt: skip


def top_predictions(scores: torch.Tensor, classes: Sequence[str], k: int = 5) -> list[tuple[str, float]]:
    top = scores.topk(min(k, scores.numel()))
    return [
        (classes[i] if i < len(classes) else str(i), float(v))
        for v, i in zip(top.values, top.indices.tolist(), strict=True)
    ]


def load_trained_model(
    cfg_path: str | Path | None, checkpoint: str | Path, overrides: Sequence[str] = ()
) -> tuple[Config, nn.Module, list[str]]:
    """``(cfg, model, classes)`` from a checkpoint; the config is the one saved in the checkpoint,
    or ``cfg_path`` with ``overrides`` when given."""
    from .checkpoint import load_checkpoint, model_state
    from .config import apply_overrides, config_from_dict, load_config
    from .loop import make_model

    ckpt = load_checkpoint(checkpoint)
    if cfg_path is not None:
        cfg = load_config(cfg_path, list(overrides))
    else:
        cfg = config_from_dict(apply_overrides(ckpt["config"], list(overrides)))
    cfg.model.pretrained = None
    model = make_model(cfg)
    model.load_state_dict(model_state(ckpt))
    return cfg, model.eval(), list(ckpt.get("classes", []))


def evaluate_checkpoint(
    cfg_path: str | Path | None, checkpoint: str | Path, clips: int | None = None, crops: int | None = None,
    overrides: Sequence[str] = (), out: str | Path | None = None,
) -> EvalResult:  # fmt: skip
    """The test protocol: ``clips`` x ``crops`` views per video of ``data.val_annotation``,
    metrics printed and per-video predictions written to ``out`` (default: next to the
    checkpoint, ``predictions.csv``)."""
    from .distributed import local_device
    from .loop import EpochSampler, make_dataset, make_loader

    cfg, model, classes = load_trained_model(cfg_path, checkpoint, overrides)
    device = local_device(cfg.train.device)
    dataset = make_dataset(cfg, train=False, clips=clips, crops=crops)
    loader = make_loader(cfg, dataset, EpochSampler(len(dataset), shuffle=False), cfg.data.batch_size)
    result = evaluate(model.to(device), loader, device)
    write_predictions(result, classes or dataset.classes, out or Path(checkpoint).with_name("predictions.csv"))
    return result


@torch.no_grad()
def predict_videos(
    cfg_path: str | Path | None, checkpoint: str | Path, videos: Sequence[str | Path], k: int = 5
) -> dict[str, list[tuple[str, float]]]:
    """Top-``k`` classes of each video file (centre clip, centre crop)."""
    from seqctx.video.data import build_sampler, build_transform, open_video

    cfg, model, classes = load_trained_model(cfg_path, checkpoint)
    d = cfg.data
    sampler = build_sampler(
        d.sampler, train=False, num_segments=cfg.model.num_segments, frame_interval=d.frame_interval
    )
    transform = build_transform(False, size=d.size, scale_size=d.scale_size)
    out = {}
    for path in videos:
        source = open_video(path, d.backend if d.backend != "frames" else "decord")
        clip = transform(source.read(sampler(source.num_frames)))
        scores = model(clip.unsqueeze(0)).softmax(-1)[0]
        out[str(path)] = top_predictions(scores, classes, k)
    return out
