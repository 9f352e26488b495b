"""An exponential moving average of a model's weights (``train.ema``: its decay).

``ema = decay * ema + (1 - decay) * weights`` after every optimiser step (the first step copies
the weights), buffers (BatchNorm's running statistics) averaged alike: ``torch.optim.swa_utils``'s
``AveragedModel`` with ``get_ema_multi_avg_fn``. Checkpoints hold it as ``model_ema`` (the
averaged model's state dict, loadable into the model itself) and ``ema_updates``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class WeightEMA:
    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"train.ema is the decay of the average, in (0, 1) (e.g. 0.9998); got {decay}")
        self.averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)

    @property
    def module(self) -> nn.Module:
        """The averaged model (evaluate it like the model)."""
        return self.averaged.module

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.averaged.update_parameters(model)

    def state(self) -> dict[str, Any]:
        return {"model_ema": self.module.state_dict(), "ema_updates": self.averaged.n_averaged.clone()}

    def restore(self, ckpt: dict[str, Any]) -> None:
        self.module.load_state_dict(ckpt["model_ema"])
        self.averaged.n_averaged.copy_(ckpt["ema_updates"])
