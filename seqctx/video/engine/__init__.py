"""Training and evaluation of action recognition models."""

from .config import Config, ConfigError, load_config
from .evaluate import evaluate, evaluate_checkpoint, predict_videos
from .train import Trainer

__all__ = ["Config", "ConfigError", "Trainer", "evaluate", "load_config", "predict_videos", "evaluate_checkpoint"]
