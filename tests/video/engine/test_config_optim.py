import pytest
import torch
from torch import nn

from seqctx.modules import GCT
from seqctx.video.engine.config import ConfigError, load_config, save_config
from seqctx.video.engine.optim import build_optimizer, build_scheduler, lr_factor, param_groups


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
    with pytest.raises(ConfigError, match=r"unknown config key 'model.nmae'; valid keys here: context, dropout"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match=r"config key 'data.batch_size' must be int, got 'eight'"):
        load_config(None, ["data.batch_size=eight"])
    with pytest.raises(ConfigError, match=r"config key 'optim.milestones\[1\]' must be int"):
        load_config(None, ["optim.milestones=[1, x]"])
    with pytest.raises(ConfigError, match="--set expects key=value"):
        load_config(None, ["optim.lr"])


def test_weight_decay_groups_honour_no_weight_decay():
    model = nn.Sequential(GCT(8), nn.Conv2d(8, 8, 3), nn.BatchNorm2d(8), nn.Linear(8, 4))
    decay, plain = param_groups(model, 1e-4)
    decay_ids = {id(p) for p in decay["params"]}
    assert decay_ids == {id(model[1].weight), id(model[3].weight)}
    assert id(model[0].beta) in {id(p) for p in plain["params"]} and plain["weight_decay"] == 0.0
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
