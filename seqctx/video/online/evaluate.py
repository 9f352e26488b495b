"""An online TSM's accuracy on its validation set, offline (each video's clip through the model)
and streamed (the clip's frames one at a time through :class:`~.stream.StreamingRecognizer`,
the frame logits averaged): the same videos, the same frames, the same predictions by
construction; ``seqctx demo`` prints both."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from seqctx.errors import UserError

from .stream import StreamingRecognizer


@dataclass
class StreamedAccuracy:
    videos: int
    offline_top1: float  # % of videos whose clip prediction is right
    streamed_top1: float  # % whose streamed prediction (mean of the frame logits) is right
    max_logit_diff: float  # the largest |streamed - offline| clip logit over the videos


def streamed_accuracy(checkpoint: str | Path, overrides: list[str] | None = None) -> StreamedAccuracy:
    """Validation (``data.val_annotation``, one centre view per video) of the checkpoint's online
    TSM, offline and streamed."""
    from seqctx.video.data.transforms import normalize_clips
    from seqctx.video.engine.builders import make_dataset
    from seqctx.video.engine.evaluate import load_trained_model

    cfg, model, classes = load_trained_model(None, checkpoint, overrides or [])
    model = model.cpu().float().eval()
    try:
        recognizer = StreamingRecognizer(model)
    except ValueError as e:
        raise UserError(f"{checkpoint}: {e}") from None
    dataset = make_dataset(cfg, "val", clips=1, crops=1, classes=classes)
    right = {"offline": 0, "streamed": 0}
    worst, videos = 0.0, 0
    for i in range(len(dataset)):
        views, label, _ = dataset[i]
        if views is None:
            continue  # unreadable: left out of both
        clip = views[0]  # uint8 (3, T, H, W)
        with torch.no_grad():
            offline = model(normalize_clips(clip.unsqueeze(0)))[0]
        recognizer.reset()
        streamed = torch.stack([recognizer.step(frame)[0] for frame in clip.permute(1, 2, 3, 0)]).mean(0)
        worst = max(worst, float((streamed - offline).abs().max()))
        right["offline"] += int(offline.argmax()) == label
        right["streamed"] += int(streamed.argmax()) == label
        videos += 1
    if not videos:
        raise UserError(f"no readable validation video for {checkpoint}")
    return StreamedAccuracy(videos, 100 * right["offline"] / videos, 100 * right["streamed"] / videos, worst)
