import pytest
import torch
from torch import nn

from seqctx.modules import GCT, OPERATOR_TYPES
from seqctx.video.engine import freeze_batchnorm
from seqctx.video.engine.config import ConfigError, load_config, save_config
from seqctx.video.engine.optim import build_optimizer, build_scheduler, lr_factor, param_groups
from seqctx.video.models import build_model


def test_base_inheritance_overrides_and_saving(tmp_path):
    (tmp_path / "base.yaml").write_text("model:\n  name: tsn_r50\n  num_classes: 174\noptim:\n  lr: 0.01\n")
    (tmp_path / "exp.yaml").write_text("_base_: base.yaml\nmodel:\n  context: cgc\noptim:\n  weight_decay: 5e-4\n")
    cfg = load_config(tmp_path / "exp.yaml", ["optim.lr=0.025", "optim.milestones=[10, 20]", "train.amp=bf16"])
    assert (cfg.model.name, cfg.model.num_classes, cfg.model.context) == ("tsn_r50", 174, "cgc")
    assert cfg.optim.lr == 0.025 and cfg.optim.weight_decay == 5e-4 and cfg.optim.milestones == [10, 20]
    save_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(tmp_path / "resolved.yaml")
    assert again == cfg


def test_unknown_keys_and_wrong_types_name_the_key(tmp_path):
    (tmp_path / "bad.yaml").write_text("model:\n  nmae: tsn_r50\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'model.nmae'; valid keys here: context, context_kwargs"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match=r"config key 'data.batch_size' must be int, got 'eight'"):
        load_config(None, ["data.batch_size=eight"])
    with pytest.raises(ConfigError, match=r"config key 'optim.milestones\[1\]' must be int"):
        load_config(None, ["optim.milestones=[1, x]"])
    with pytest.raises(ConfigError, match="--set expects key=value"):
        load_config(None, ["optim.lr"])


def test_enum_like_fields_are_literals_checked_at_load():
    import dataclasses
    import typing

    from seqctx.video.data import BACKENDS, DATASET_TYPES, Backend, DatasetFormat
    from seqctx.video.engine.config import Config

    assert typing.get_args(DatasetFormat) == tuple(DATASET_TYPES) and typing.get_args(Backend) == BACKENDS

    def is_literal(hint) -> bool:
        return typing.Literal in (typing.get_origin(hint), *map(typing.get_origin, typing.get_args(hint)))

    literal = {f"{name}.{key}" for name, cls in typing.get_type_hints(Config).items() if dataclasses.is_dataclass(cls)
               for key, hint in typing.get_type_hints(cls).items() if is_literal(hint)}  # fmt: skip
    assert {"data.format", "data.backend", "data.sampler", "data.crop", "data.test_crops", "data.on_error",
            "optim.name", "optim.no_decay", "optim.schedule", "train.amp", "train.freeze_bn"} <= literal  # fmt: skip
    assert load_config(None, ["data.test_crops=3", "train.amp="]).data.test_crops == 3
    with pytest.raises(ConfigError, match="'data.sampler' must be one of 'segments', 'dense'; got 'uniform'"):
        load_config(None, ["data.sampler=uniform"])


def test_weight_decay_groups_follow_the_rule_a_config_names():
    model = nn.Sequential(GCT(8), nn.Conv2d(8, 8, 3), nn.BatchNorm2d(8), nn.Linear(8, 4))
    gct, conv, bn, fc = model
    decay, plain = param_groups(model, 1e-4)  # norm_bias: TSM's code
    assert {id(p) for p in decay["params"]} == {id(conv.weight), id(fc.weight), id(gct.alpha), id(gct.gamma)}
    assert {id(p) for p in plain["params"]} == {id(gct.beta), id(conv.bias), id(bn.weight), id(bn.bias), id(fc.bias)}
    assert plain["weight_decay"] == 0.0 and decay["weight_decay"] == 1e-4
    decay, plain = param_groups(model, 1e-4, "declared")  # the GCT paper: only beta goes without
    assert [id(p) for p in plain["params"]] == [id(gct.beta)]
    assert len(decay["params"]) == len(list(model.parameters())) - 1
    with pytest.raises(ConfigError, match="'optim.no_decay' must be one of 'declared', 'norm_bias'; got 'bn'"):
        load_config(None, ["optim.no_decay=bn"])
    from seqctx.video.engine.config import OptimConfig

    opt = build_optimizer(model, OptimConfig(name="sgd", nesterov=True))
    assert opt.param_groups[0]["nesterov"] is True


@pytest.mark.parametrize(
    "schedule,kw,checks",
    [
        ("multistep", {"milestones": [2, 4]}, {0: 1.0, 2: 0.1, 3: 0.1, 4: 0.01}),
        ("step", {"step_size": 3}, {0: 1.0, 2.9: 1.0, 3: 0.1, 6: 0.01}),
        ("cosine", {}, {0: 1.0, 5: 0.5, 10: 0.0}),
    ],
)
def test_schedules(schedule, kw, checks):
    from seqctx.video.engine.config import OptimConfig

    cfg = OptimConfig(schedule=schedule, **kw)
    for epoch, want in checks.items():
        assert lr_factor(cfg, int(epoch * 10), 10, 10) == pytest.approx(want, abs=1e-9)


def test_linear_warmup_then_schedule():
    from seqctx.video.engine.config import OptimConfig

    cfg = OptimConfig(schedule="cosine", warmup_epochs=1.0, lr=0.1)
    model = nn.Linear(2, 2)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch=4, epochs=5)
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    assert lrs[4] == pytest.approx(0.1) and lrs[7] < 0.1
    with pytest.raises(ValueError, match="optim.schedule must be"):
        build_scheduler(opt, OptimConfig(schedule="poly"), 4, 5)
    assert torch.is_tensor(torch.tensor(lrs))


@pytest.mark.parametrize("context", ["ge_theta_plus", "ce", "cgc"])
def test_partial_bn_freezes_the_backbone_norms_only(context):
    model = build_model("tsm_r18", 4, num_segments=4, context=context, width=8, input_size=32).train()
    freeze_batchnorm(model, "partial")
    norms = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    backbone = [(n, m) for n, m in norms if ".ctx" not in n and "context_gate" not in n]
    operators = [(n, m) for n, m in norms if (n, m) not in backbone]
    assert bool(operators) == (context != "ce"), context  # GE-theta's gather BN, CGC's gate norms
    first, *rest = backbone
    assert first[0] == "trunk.bn1" and first[1].training and first[1].weight.requires_grad
    assert all(not m.training and not m.weight.requires_grad and not m.bias.requires_grad for _, m in rest)
    assert all(m.training and m.weight.requires_grad for _, m in operators)  # new layers: nothing to keep
    assert all(op.training for op in model.modules() if isinstance(op, OPERATOR_TYPES))  # CE's estimates too
    freeze_batchnorm(model.train(), "all")
    assert all(not m.training for _, m in backbone) and all(m.training for _, m in operators)


def test_context_kwargs_come_from_yaml_and_reach_the_operators(tmp_path):
    from seqctx.modules import SqueezeExcite
    from seqctx.video.engine.builders import make_model

    (tmp_path / "se.yaml").write_text(
        "model:\n  name: resnet18\n  num_classes: 4\n  width: 8\n  context: se\n  context_kwargs:\n    reduction: 2\n"
    )
    cfg = load_config(tmp_path / "se.yaml")
    se = next(m for m in make_model(cfg).modules() if isinstance(m, SqueezeExcite))
    assert cfg.model.context_kwargs == {"reduction": 2} and se.fc1.out_features == 4  # 8 channels / 2
    changed = load_config(tmp_path / "se.yaml", ["model.context_kwargs.reduction=4"])
    assert changed.model.context_kwargs == {"reduction": 4}
    with pytest.raises(ConfigError, match="'model.context_kwargs' must be a mapping of names to values, got 8"):
        load_config(tmp_path / "se.yaml", ["model.context_kwargs=8"])
