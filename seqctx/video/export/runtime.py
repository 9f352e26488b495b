"""Running an exported ONNX recognizer with onnxruntime: its metadata (classes, config), logits,
and ``seqctx predict --onnx``."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqctx.errors import UserError


def open_session(path: str | Path, threads: int | None = None) -> tuple[Any, dict]:
    """An onnxruntime CPU session for a file ``seqctx export`` wrote, and its metadata; a
    :class:`UserError` naming the file when it is missing, unreadable or not one of ours."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError("running ONNX files needs onnxruntime: pip install 'seqctx[export]'") from None
    if not Path(path).is_file():
        raise UserError(f"no ONNX file at {path}")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's InvalidProtobuf, InvalidArgument, ...: not a usable ONNX file
        reason = str(e).split(" : ")[-1] if " : " in str(e) else str(e)
        raise UserError(f"{path} is not a readable ONNX file ({Path(path).stat().st_size} bytes; onnxruntime: "
                        f"{reason}); use the file `seqctx export` wrote") from None  # fmt: skip
    props = session.get_modelmeta().custom_metadata_map
    if "seqctx" not in props:
        raise UserError(f"{path} was not written by `seqctx export` (no seqctx metadata)")
    return session, json.loads(props["seqctx"])


class OnnxRecognizer:
    """An ONNX file written by ``seqctx export``: ``logits(clips)`` for uint8 ``(N, T, H, W, 3)``,
    ``classes``, ``frames``, ``size`` and the run's ``config`` from its metadata."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        self.session, meta = open_session(path, threads)
        if meta.get("online"):
            raise UserError(f"{path} is an online (frame by frame) model: run it with `seqctx predict --stream`")
        self.classes: list[str] = meta["classes"]
        self.frames: int = meta["frames"]
        self.size: int = meta["size"]
        self.config: dict = meta["config"]

    def logits(self, clips: np.ndarray) -> np.ndarray:
        return self.session.run(["logits"], {"clips": np.ascontiguousarray(clips, dtype=np.uint8)})[0]


def predict_onnx(path: str | Path, videos: Sequence[str | Path], k: int = 5) -> Iterator:
    """``seqctx predict``'s top-``k`` for each video, scored by onnxruntime: the same clip reading
    (:func:`~seqctx.video.engine.evaluate.prediction_clips`, with the run's config from the file)
    and softmax as the PyTorch path."""
    from seqctx.video.engine.config import config_from_dict
    from seqctx.video.engine.evaluate import Prediction, expand_videos, prediction_clips, top_predictions

    recognizer = OnnxRecognizer(path)
    cfg = config_from_dict(recognizer.config)
    cfg.data.size = recognizer.size
    cfg.model.num_segments = recognizer.frames
    for video, views in prediction_clips(cfg, expand_videos(videos)):
        if isinstance(views, str):
            yield Prediction(str(video), error=views)
            continue
        logits = recognizer.logits(views.permute(0, 2, 3, 4, 1).numpy())  # (1, 3, T, H, W) -> (1, T, H, W, 3)
        scores = torch.from_numpy(logits).float().softmax(-1)[0]
        yield Prediction(str(video), top_predictions(scores, recognizer.classes, k))
