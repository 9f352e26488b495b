"""Optimisers with weight-decay groups, and learning-rate schedules with linear warmup."""

from __future__ import annotations

import math

import torch
from torch import nn

from seqctx.modules.tables import NORMS

from .config import NO_DECAY_RULES, OptimConfig


def param_groups(model: nn.Module, weight_decay: float, no_decay: str = "norm_bias") -> list[dict[str, object]]:
    """Two groups: with and without weight decay. ``no_decay`` says which parameters go without:

    - ``"declared"``: only the names modules list in their ``no_weight_decay()`` (GCT's ``beta``:
      the GCT paper's appendix A exempts nothing else);
    - ``"norm_bias"``: those, plus every normaliser's affine parameters and every ``bias`` (TSM's
      and TSN's code).
    """
    if no_decay not in NO_DECAY_RULES:
        raise ValueError(f"optim.no_decay must be one of {', '.join(NO_DECAY_RULES)}, got {no_decay!r}")
    exempt: set[int] = set()
    for module in model.modules():
        own = dict(module.named_parameters(recurse=False))
        if hasattr(module, "no_weight_decay"):
            exempt.update(id(own[n]) for n in module.no_weight_decay() if n in own)
        if no_decay == "norm_bias":
            if isinstance(module, NORMS):
                exempt.update(id(p) for p in own.values())
            if "bias" in own:
                exempt.add(id(own["bias"]))
    decay, plain = [], []
    for p in model.parameters():
        if p.requires_grad:
            (plain if id(p) in exempt else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


# TSM's get_optim_policies (ops/models.py of mit-han-lab/temporal-shift-module): name, lr and
# weight-decay multipliers of each group, in its order.
TSM_POLICY = (
    ("first_conv_weight", 1, 1), ("first_conv_bias", 2, 0), ("normal_weight", 1, 1), ("normal_bias", 2, 0),
    ("BN scale/shift", 1, 0), ("custom_ops", 1, 1), ("lr5_weight", 5, 1), ("lr10_bias", 10, 0),
)  # fmt: skip


def tsm_param_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict[str, object]]:
    """TSM's optimiser policy (``optim.policy: tsm``): the first convolution's weight and bias,
    the other convolution weights and biases (bias: lr x2, no decay), every normaliser's affine
    parameters (no decay; with partial BN only the first BN trains, as in TSM), and the classifier
    (``ClassificationHead.fc``, TSM's ``fc_lr5``: weight lr x5, bias lr x10 without decay). Where
    TSM raises on a module it has no rule for, the context operators' parameters go to
    ``custom_ops`` (lr x1, decay x1; the Linear layers of SE/GE/CGC gates too), except those a
    module declares in ``no_weight_decay()`` (GCT's beta), which go without decay. Each group
    holds ``lr_mult``/``decay_mult`` and its lr and decay already multiplied."""
    from seqctx.video.models.heads import ClassificationHead

    members: dict[str, list[nn.Parameter]] = {name: [] for name, _, _ in TSM_POLICY}
    classifier = {id(m.fc) for m in model.modules() if isinstance(m, ClassificationHead)}
    declared: set[int] = set()
    for module in model.modules():
        if hasattr(module, "no_weight_decay"):
            own = dict(module.named_parameters(recurse=False))
            declared.update(id(own[n]) for n in module.no_weight_decay() if n in own)
    seen_conv = False
    for module in model.modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if not own:
            continue
        weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
        if isinstance(module, nn.modules.conv._ConvNd):
            first = not seen_conv
            seen_conv = True
            members["first_conv_weight" if first else "normal_weight"].append(weight)
            if bias is not None and bias.requires_grad:
                members["first_conv_bias" if first else "normal_bias"].append(bias)
        elif id(module) in classifier:
            members["lr5_weight"].append(weight)
            members["lr10_bias"].append(bias)
        elif isinstance(module, NORMS):
            members["BN scale/shift"] += own
        else:
            for p in own:
                members["BN scale/shift" if id(p) in declared else "custom_ops"].append(p)
    return [{"params": members[name], "name": name, "lr_mult": lr_mult, "decay_mult": decay_mult,
             "lr": lr * lr_mult, "weight_decay": weight_decay * decay_mult}
            for name, lr_mult, decay_mult in TSM_POLICY if members[name]]  # fmt: skip


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD or AdamW over the groups of ``optim.policy``: ``decay_groups`` (:func:`param_groups`
    by ``optim.no_decay``) or ``tsm`` (:func:`tsm_param_groups`)."""
    if cfg.policy == "tsm":
        groups = tsm_param_groups(model, cfg.lr, cfg.weight_decay)
    else:
        groups = param_groups(model, cfg.weight_decay, cfg.no_decay)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))
    raise ValueError(f"optim.name must be 'sgd' or 'adamw', got {cfg.name!r}")


def lr_factor(cfg: OptimConfig, step: int, steps_per_epoch: int, epochs: int) -> float:
    """The multiplier of ``cfg.lr`` at iteration ``step``: linear warmup over
    ``warmup_epochs``, then ``step`` (x gamma every ``step_size`` epochs), ``multistep``
    (x gamma at each milestone epoch) or ``cosine`` (to ``min_lr`` at the end)."""
    epoch = step / steps_per_epoch
    warm = cfg.warmup_epochs
    if warm > 0 and epoch < warm:
        return (epoch + 1 / steps_per_epoch) / warm
    if cfg.schedule == "step":
        return cfg.gamma ** int(epoch // cfg.step_size)
    if cfg.schedule == "multistep":
        return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    if cfg.schedule == "cosine":
        progress = min(1.0, (epoch - warm) / max(1e-8, epochs - warm))
        floor = cfg.min_lr / cfg.lr
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    raise ValueError(f"optim.schedule must be 'step', 'multistep' or 'cosine', got {cfg.schedule!r}")


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, steps_per_epoch: int, epochs: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-iteration scheduler (call ``step()`` after every optimiser step)."""
    lr_factor(cfg, 0, steps_per_epoch, epochs)  # validate the schedule name now
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(cfg, step, max(1, steps_per_epoch), epochs)
    )
