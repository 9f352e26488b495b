"""Evaluation: multi-clip x multi-crop testing with scores averaged per video, top-1/top-5 and
mean class accuracy, per-video predictions as CSV and metrics as JSON, and top-5 predictions for
any video.

Evaluation never lets one video stand in for another: unreadable videos are left out, counted and
named in the result, the CSV and the JSON. The model is always the checkpoint's own (its saved
config); a config given beside it may change data and views, not the model.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from seqctx.errors import CheckpointError, ConfigError, DataError
from seqctx.overrides import apply_overrides
from seqctx.video.data import VideoDataset, fold_views, normalize_clips

from .config import Config, ModelConfig, config_from_dict, read_yaml
from .distributed import all_gather_objects, init_distributed, is_main, local_device, rank_and_world


@dataclass
class EvalResult:
    """Metrics over the videos that were read; ``unreadable`` lists ``(id, reason)`` of the others."""

    top1: float
    top5: float
    mean_class_accuracy: float
    num_videos: int  # videos evaluated (readable ones)
    scores: torch.Tensor  # (V, K) softmax averaged over views
    labels: torch.Tensor  # (V,)
    ids: list[str]
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    confusions: list[tuple[str, str, int]] = field(default_factory=list)  # (true, predicted, videos), most first
    complete: bool = True  # False when a stop signal ended the evaluation early

    def metrics(self) -> dict[str, float]:
        return {"top1": self.top1, "top5": self.top5, "mean_class_accuracy": self.mean_class_accuracy}

    def summary(self) -> str:
        """One line: how many videos were evaluated, how many left out, and the metrics."""
        line = f"{self.num_videos} videos evaluated"
        if self.unreadable:
            names = ", ".join(vid for vid, _ in self.unreadable[:5]) + (", ..." if len(self.unreadable) > 5 else "")
            line += f" ({len(self.unreadable)} unreadable, left out: {names})"
        line += f": top-1 {self.top1:.2f}  top-5 {self.top5:.2f}  mean class accuracy {self.mean_class_accuracy:.2f}"
        if self.confusions:
            line += "\nmost confused (true -> predicted, videos): " + "; ".join(
                f"{true} -> {pred} ({n})" for true, pred, n in self.confusions
            )
        return line


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
    channels_last: bool = False,
    max_clips: int | None = None,
    stopped: Callable[[], bool] | None = None,
) -> EvalResult:
    """Runs every view of every video (clips ``(N, V, 3, T, H, W)``) and averages the softmax
    scores of a video's views; videos the loader could not read (``meta["failed"]``, see
    :func:`~seqctx.video.data.collate_clips`) are listed, not scored. ``max_clips``: at most
    this many clips per forward (a batch's ``N*V`` views run in chunks, normalised on the device
    chunk by chunk; the views of one video may span two). ``channels_last``: clips in
    ``channels_last_3d`` memory, as training feeds them. ``stopped()``, asked before each batch:
    True ends the evaluation there, with ``complete=False``."""
    model.eval()
    all_scores, all_labels, ids, unreadable = [], [], [], []
    complete = True
    for clips, labels, meta in tqdm(loader, desc="evaluating", disable=not progress, leave=False):
        if stopped is not None and stopped():
            complete = False
            break
        unreadable += meta.get("failed", [])
        if len(clips) == 0:
            continue
        views = clips.shape[1]
        probs = []
        for chunk in clips.flatten(0, 1).split(max_clips or len(clips) * views):  # uint8 (<= max_clips, 3, T, H, W)
            flat, _ = fold_views(chunk.unsqueeze(1), device)  # each chunk a batch of one-view items
            if channels_last:
                flat = flat.contiguous(memory_format=torch.channels_last_3d)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                probs.append(model(flat).float().softmax(-1))
        scores = torch.cat(probs).view(len(clips), views, -1).mean(1)
        all_scores.append(scores.cpu())
        all_labels.append(torch.as_tensor(labels))
        ids += list(meta["id"])
    if not ids:
        scores, labels = torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    else:
        scores, labels = torch.cat(all_scores), torch.cat(all_labels)
    top1, top5, mca = accuracy_metrics(scores, labels)
    return EvalResult(top1, top5, mca, len(ids), scores, labels, ids, unreadable, complete=complete)


def merge_results(parts: Sequence[EvalResult], order: Sequence[str]) -> EvalResult:
    """One result from the shards that the processes evaluated, videos in ``order`` (the data
    set's ids, each once: :class:`~seqctx.video.data.VideoIndex` refuses repeats), metrics over
    all of them."""
    position = {vid: i for i, vid in enumerate(order)}
    rows = [(vid, s, y) for p in parts for vid, s, y in zip(p.ids, p.scores, p.labels.tolist(), strict=True)]
    rows.sort(key=lambda r: position[r[0]])
    unreadable = sorted((u for p in parts for u in p.unreadable), key=lambda u: position.get(u[0], -1))
    if rows:
        scores, labels = torch.stack([r[1] for r in rows]), torch.tensor([r[2] for r in rows], dtype=torch.long)
    else:
        scores, labels = torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    top1, top5, mca = accuracy_metrics(scores, labels)
    complete = all(p.complete for p in parts)
    return EvalResult(top1, top5, mca, len(rows), scores, labels, [r[0] for r in rows], unreadable, complete=complete)


def amp_dtype(amp: str | None, device: torch.device) -> torch.dtype | None:
    if amp is None:
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        if device.type != "cuda":
            raise ConfigError("train.amp='fp16' needs CUDA; use 'bf16' on CPU")
        return torch.float16
    raise ConfigError(f"train.amp must be null, 'bf16' or 'fp16', got {amp!r}")


def eval_amp_dtype(cfg: Config, device: torch.device) -> torch.dtype | None:
    """Evaluation's autocast dtype: the run's ``train.amp`` on CUDA, fp32 elsewhere."""
    return amp_dtype(cfg.train.amp, device) if device.type == "cuda" else None


def evaluate_dataset(
    model: nn.Module, cfg: Config, dataset: VideoDataset, device: torch.device, views: int, progress: bool = True,
    stopped: Callable[[], bool] | None = None,
) -> EvalResult:  # fmt: skip
    """Every video of ``dataset`` (``views`` views each) evaluated once, the work split over the
    processes of a ``torchrun`` job (video ``i`` on rank ``i % world``, no padding, so no video
    counts twice); each process returns the merged result, equal to a single process's.

    At most ``data.test_batch_clips`` clips (default ``data.batch_size``) go through the model at
    once, and the loader batches ``max(1, clips // views)`` videos, so memory does not grow with
    the views: 10 clips x 3 crops cost what 1 view does. Under the run's ``train.amp`` on CUDA."""
    from .builders import EpochSampler, make_loader

    rank, world = rank_and_world()
    max_clips = cfg.data.test_batch_clips or cfg.data.batch_size
    sampler = EpochSampler(len(dataset), shuffle=False, rank=rank, world=world)
    loader = make_loader(cfg, dataset, sampler, max(1, max_clips // views))
    amp = eval_amp_dtype(cfg, device)
    local = evaluate(model, loader, device, amp, progress and rank == 0, cfg.train.channels_last, max_clips, stopped)
    return merge_results(all_gather_objects(local), list(dataset.index.ids))


def confusion_matrix(scores: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(K, K)`` counts: row = true class, column = top-1 prediction (labelled videos only)."""
    keep = labels >= 0
    pairs = labels[keep] * num_classes + scores[keep].argmax(1)
    return torch.bincount(pairs, minlength=num_classes * num_classes).view(num_classes, num_classes)


def top_confusions(matrix: torch.Tensor, classes: Sequence[str], n: int = 5) -> list[tuple[str, str, int]]:
    """The ``n`` largest off-diagonal cells as ``(true name, predicted name, videos)``, most
    videos first (ties: by true class, then predicted class)."""
    off = matrix.clone()
    off.fill_diagonal_(0)
    cells = sorted(((-int(off[t, p]), t, p) for t, p in off.nonzero().tolist()))[:n]
    name = (lambda i: classes[i]) if len(classes) == matrix.shape[0] else str
    return [(name(t), name(p), -count) for count, t, p in cells]


def write_confusion(result: EvalResult, classes: Sequence[str], csv_path: str | Path) -> list[Path]:
    """``<name>_confusion.json`` (the class names, the matrix, each class's top-1 accuracy and
    video count, the top confusions) and ``<name>_confusion.png`` beside the predictions CSV;
    the top confusions also go into ``result.confusions``."""
    from .plots import plot_confusion

    csv_path = Path(csv_path)
    k = result.scores.shape[1]
    names = list(classes) if len(classes) == k else [str(i) for i in range(k)]
    matrix = confusion_matrix(result.scores, result.labels, k)
    result.confusions = top_confusions(matrix, names)
    counts = matrix.sum(1)
    per_class = {name: {"videos": int(c), "top1": 100 * float(matrix[i, i]) / int(c) if c else None}
                 for i, (name, c) in enumerate(zip(names, counts, strict=True))}  # fmt: skip
    confused = [{"true": t, "predicted": p, "videos": n} for t, p, n in result.confusions]
    record = {"classes": names, "matrix": matrix.tolist(), "per_class": per_class, "top_confusions": confused}
    json_path = csv_path.with_name(csv_path.stem + "_confusion.json")
    json_path.write_text(json.dumps(record, indent=1) + "\n")
    png_path = plot_confusion(matrix, names, csv_path.with_name(csv_path.stem + "_confusion.png"))
    return [json_path, png_path]


def write_predictions(result: EvalResult, classes: Sequence[str], path: str | Path) -> None:
    """One row per video: id, status, label, predicted class, its score and the top-5 class names;
    an unreadable video's row has status ``unreadable: reason`` and no prediction."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def name(i: int) -> str:
        return classes[i] if 0 <= i < len(classes) else str(i)

    k = min(5, result.scores.shape[1])
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "status", "label", "label_name", "pred", "pred_name", "score", "top5"])
        for vid, label, s in zip(result.ids, result.labels.tolist(), result.scores, strict=True):
            top = s.topk(k)
            pred = int(top.indices[0])
            w.writerow([vid, "ok", label, name(label) if label >= 0 else "", pred, name(pred), f"{top.values[0]:.4f}",
                        "|".join(name(int(i)) for i in top.indices)])  # fmt: skip
        for vid, reason in result.unreadable:
            w.writerow([vid, f"unreadable: {reason}", "", "", "", "", "", ""])


def write_metrics(result: EvalResult, path: str | Path, **info: object) -> None:
    """The metrics, the number of videos evaluated and the unreadable ones (id and reason) as JSON;
    ``info`` adds fields (checkpoint, views, ...)."""
    record = {**info, **result.metrics(), "num_videos": result.num_videos,
              "num_unreadable": len(result.unreadable),
              "unreadable": [{"id": vid, "reason": reason} for vid, reason in result.unreadable]}  # fmt: skip
    Path(path).write_text(json.dumps(record, indent=1) + "\n")


def top_predictions(scores: torch.Tensor, classes: Sequence[str], k: int = 5) -> list[tuple[str, float]]:
    top = scores.topk(min(k, scores.numel()))
    return [
        (classes[i] if i < len(classes) else str(i), float(v))
        for v, i in zip(top.values, top.indices.tolist(), strict=True)
    ]


# Model keys that do not change what a trained network computes at test time.
_FREE_AT_TEST = ("pretrained", "dropout")


def model_conflicts(saved: ModelConfig, requested: ModelConfig, keys: Sequence[str]) -> list[str]:
    """``"model.KEY: checkpoint X, requested Y"`` for each of ``keys`` whose values differ."""
    return [
        f"model.{k}: the checkpoint's is {getattr(saved, k)!r}, the request's {getattr(requested, k)!r}"
        for k in keys
        if getattr(saved, k) != getattr(requested, k)
    ]


def checkpoint_config(ckpt: dict, path: str | Path) -> Config:
    """The validated config a seqctx training checkpoint was trained with. A ``model.input_size``
    saved before ``data.size`` became the one knob is dropped: the model is rebuilt for
    ``data.size`` (the two had to match)."""
    if "config" not in ckpt or "model" not in ckpt:
        kind = "a fairseq checkpoint" if {"cfg", "optimizer_history"} & set(ckpt) else "not a training checkpoint"
        raise CheckpointError(
            f"{path} is not a seqctx checkpoint ({kind}: it has no 'config' and 'model' entries; it has "
            f"{', '.join(map(str, list(ckpt)[:8]))}); use the latest.pt/best.pt that `seqctx train` writes"
        )
    config = dict(ckpt["config"])
    config["model"] = {k: v for k, v in config.get("model", {}).items() if k != "input_size"}
    return config_from_dict(config)


def check_crop_sizes(model: nn.Module, cfg: Config, trained_size: int) -> None:
    """A model with a fixed-size global gather (GE-theta's depthwise kernel covers the feature map
    of the ``data.size`` it was trained at) takes frames of that size only: ``data.size`` and
    ``data.test_crop_size`` of another size are a :class:`CheckpointError` naming both, before any
    video is read (other models take any size)."""
    from seqctx.modules.gather_excite import GlobalDepthwiseConv

    if not any(isinstance(m, GlobalDepthwiseConv) for m in model.modules()):
        return
    for key, size in (("data.size", cfg.data.size), ("data.test_crop_size", cfg.data.test_crop_size)):
        if size is not None and size != trained_size:
            raise CheckpointError(
                f"{key}={size}: this model's GE-theta gathers with a depthwise kernel the size of the feature map "
                f"of the {trained_size}x{trained_size} frames it was trained at; {size}x{size} crops give another "
                f"map. Use {trained_size} ({key}={trained_size})"
            )


def load_trained_model(
    cfg_path: str | Path | None, checkpoint: str | Path, overrides: Sequence[str] = (), ema: bool = False
) -> tuple[Config, nn.Module, list[str]]:
    """``(cfg, model, classes)`` from a training checkpoint. The model is always built from the
    checkpoint's own config. ``cfg_path`` and ``overrides`` may change data, views and device;
    a model key they set to another value than the checkpoint's raises :class:`CheckpointError`
    naming both values (``pretrained`` and ``dropout`` are free: they do not change a trained
    network's test output). Without ``cfg_path`` the checkpoint's config is the base. ``ema``:
    the averaged weights (``model_ema``, ``train.ema``) instead of the trained ones."""
    from .builders import make_model
    from .checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    saved = checkpoint_config(ckpt, checkpoint)
    data = read_yaml(cfg_path) if cfg_path is not None else saved.to_dict()
    data = apply_overrides(data, list(overrides))
    cfg = config_from_dict(data)
    asked = [k for k in (data.get("model") or {}) if k not in _FREE_AT_TEST]
    conflicts = model_conflicts(saved.model, cfg.model, asked)
    if conflicts:
        raise CheckpointError(
            f"{checkpoint} holds another model than the one asked for: {'; '.join(conflicts)}. The checkpoint "
            "decides the model: drop these model keys (or the config: `--checkpoint` alone uses the run's own)"
        )
    saved.model.pretrained = None
    cfg.model = saved.model
    model = make_model(saved)  # built for the frame size it was trained at
    check_crop_sizes(model, cfg, saved.data.size)
    if ema and "model_ema" not in ckpt:
        raise CheckpointError(f"{checkpoint} holds no averaged weights (model_ema): its run trained without train.ema")
    load_model_state(model, ckpt["model_ema" if ema else "model"], checkpoint)
    return cfg, model.eval(), list(ckpt.get("classes", []))


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    """``model.load_state_dict(state)``, with a short :class:`CheckpointError` (a
    :class:`~seqctx.video.models.weights.LoadReport`: counts and a few names) instead of PyTorch's
    full key dump when they do not fit."""
    from seqctx.video.models.weights import LoadReport

    target = model.state_dict()
    report = LoadReport(
        loaded=[k for k, v in state.items() if k in target and v.shape == target[k].shape],
        missing=[k for k in target if k not in state],
        unexpected=[k for k in state if k not in target],
        mismatched=[f"{k} {tuple(v.shape)} -> {tuple(target[k].shape)}" for k, v in state.items()
                    if k in target and v.shape != target[k].shape],
    )  # fmt: skip
    if report.missing or report.unexpected or report.mismatched:
        raise CheckpointError(f"{path} does not fit the model: {report}")
    model.load_state_dict(state)


def evaluate_checkpoint(
    cfg_path: str | Path | None, checkpoint: str | Path, clips: int | None = None, crops: int | None = None,
    overrides: Sequence[str] = (), out: str | Path | None = None, progress: bool = True, ema: bool = False,
) -> EvalResult:  # fmt: skip
    """The test protocol: ``clips`` x ``crops`` views per video (default ``data.test_clips`` x
    ``data.test_crops`` crops of ``data.test_crop_size``) of ``data.val_annotation`` with the
    checkpoint's model and its class list; per-video predictions go to ``out`` (default:
    ``predictions.csv`` next to the checkpoint) and the metrics, with the unreadable videos, to the
    same name with ``.json``, the confusion matrix and per-class accuracy to ``<name>_confusion.json``
    and ``.png`` (:func:`write_confusion`). Under ``torchrun`` every process evaluates its share
    of the videos and rank 0 writes the files (:func:`evaluate_dataset`). ``ema``: test the
    averaged weights."""
    from seqctx.outputs import output_file

    from .builders import make_dataset, memory_format
    from .config import check_views

    csv_path = output_file(out if out else Path(checkpoint).with_name("predictions.csv"), "--out")  # before the work
    cfg, model, classes = load_trained_model(cfg_path, checkpoint, overrides, ema=ema)
    clips = cfg.data.test_clips if clips is None else clips
    crops = cfg.data.test_crops if crops is None else crops
    check_views(cfg.data.sampler, clips, "--clips")
    device = local_device(cfg.train.device)
    init_distributed(device)
    dataset = make_dataset(cfg, "test", clips=clips, crops=crops, classes=classes or None)
    model = model.to(device, memory_format=memory_format(cfg))
    result = evaluate_dataset(model, cfg, dataset, device, clips * crops, progress=progress)
    if is_main():
        write_predictions(result, classes or dataset.classes, csv_path)
        write_confusion(result, classes or dataset.classes, csv_path)
        write_metrics(result, csv_path.with_suffix(".json"), checkpoint=str(checkpoint), weights="model_ema" if ema
                      else "model", annotation=cfg.data.val_annotation, clips=clips, crops=crops)  # fmt: skip
    return result


@dataclass
class Prediction:
    """The top classes of one video file, or why it could not be read."""

    video: str
    top: list[tuple[str, float]] = field(default_factory=list)
    error: str | None = None


def expand_videos(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given; a folder stands for the video files directly in it (sorted by name, any
    extension decord opens); a folder without videos is a :class:`DataError`."""
    from seqctx.video.data.datasets import VIDEO_EXTENSIONS

    out: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            videos = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
            if not videos:
                raise DataError(f"{path} is a folder without video files ({', '.join(VIDEO_EXTENSIONS)})")
            out += videos
        else:
            out.append(path)
    return out


@torch.no_grad()
def prediction_clips(cfg: Config, files: Sequence[Path]) -> Iterator[tuple[Path, torch.Tensor | str]]:
    """For each video file, ``(path, views)``: the clip ``predict`` scores (the centre clip, a
    centre crop of ``data.size`` after ``data.scale_size``), uint8 ``(1, 3, T, H, W)``; or
    ``(path, reason)`` when it cannot be read."""
    from seqctx.video.data import VideoError, build_sampler, build_transform
    from seqctx.video.data.guarded import open_guarded

    d = cfg.data
    sampler = build_sampler(
        d.sampler, train=False, num_segments=cfg.model.num_segments, frame_interval=d.frame_interval
    )
    transform = build_transform(False, size=d.size, scale_size=d.scale_size)
    for path in files:
        try:
            backend = "auto" if d.backend == "frames" else d.backend  # files given are videos or folders
            source = open_guarded(
                path, d.decode_timeout, backend=backend, num_threads=d.decode_threads,
                short_side=d.decode_short_side, frame_template=d.frame_template, first_frame=d.first_frame,
            )  # fmt: skip
            (indices,) = sampler(source.num_frames)  # one clip
            yield path, transform(source.read(indices))
        except (VideoError, OSError, RuntimeError, ValueError) as e:
            yield path, str(e)


def predict_videos(
    checkpoint: str | Path, videos: Sequence[str | Path], k: int = 5, overrides: Sequence[str] = ()
) -> Iterator[Prediction]:
    """Top-``k`` classes of each video file, or of the videos in a folder (:func:`prediction_clips`;
    model, sampling, sizes and device from the checkpoint's config, ``overrides`` applied), one
    :class:`Prediction` per video as it is done; a video that cannot be read gives its error and
    the rest go on."""
    files = expand_videos(videos)
    cfg, model, classes = load_trained_model(None, checkpoint, overrides)
    device = local_device(cfg.train.device)
    model, amp = model.to(device), eval_amp_dtype(cfg, device)
    for path, views in prediction_clips(cfg, files):
        if isinstance(views, str):
            yield Prediction(str(path), error=views)
            continue
        with torch.inference_mode(), torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            scores = model(normalize_clips(views.to(device))).float().softmax(-1)[0].cpu()
        yield Prediction(str(path), top_predictions(scores, classes, k))
