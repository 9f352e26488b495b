"""Training and evaluation of action recognition models."""

from .config import Config, ConfigError, load_config
from .evaluate import evaluate, evaluate_checkpoint, predict_videos
from .train import Trainer, freeze_batchnorm

__all__ = [
    "Config", "ConfigError", "Trainer", "evaluate", "evaluate_checkpoint", "freeze_batchnorm", "load_config",
    "predict_videos",
]  # fmt: skip
