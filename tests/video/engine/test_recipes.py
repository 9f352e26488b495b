"""The papers' recipes and the modern tools: TSM's optimiser policy, scale jittering, the SSv2 flip
with swapped classes, clip-wise colour jitter and RandAugment, mixup/CutMix, the weight average,
repeated augmentation, the confusion matrix, CGC in channels_last."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from seqctx.cli import main
from seqctx.errors import ConfigError
from seqctx.modules import ContextGatedConv2d
from seqctx.video.data import build_transform, left_right_pairs
from seqctx.video.data.transforms import ScaleJitterCrop
from seqctx.video.engine import Trainer, freeze_batchnorm
from seqctx.video.engine.builders import EpochSampler, make_dataset
from seqctx.video.engine.checkpoint import load_checkpoint
from seqctx.video.engine.evaluate import confusion_matrix, top_confusions
from seqctx.video.engine.mixing import MixupCutmix
from seqctx.video.engine.optim import tsm_param_groups
from seqctx.video.models import build_model

from .runs import tiny_config

DATA = Path(__file__).parents[2] / "data"


def tsm_reference_policy(model, partial_bn):
    """TSM's get_optim_policies (ops/models.py), restated: conv count, Linear -> lr5/lr10 (fc_lr5),
    BatchNorm2d/3d -> bn (only the first with partial BN), any other parameterised leaf an error."""
    groups = {"first_conv_weight": [], "first_conv_bias": [], "normal_weight": [], "normal_bias": [],
              "BN scale/shift": [], "lr5_weight": [], "lr10_bias": []}  # fmt: skip
    convs = bns = 0
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Conv1d | nn.Conv3d):
            convs += 1
            ps = list(m.parameters())
            groups["first_conv_weight" if convs == 1 else "normal_weight"].append(ps[0])
            if len(ps) == 2:
                groups["first_conv_bias" if convs == 1 else "normal_bias"].append(ps[1])
        elif isinstance(m, nn.Linear):
            groups["lr5_weight"].append(m.weight)
            groups["lr10_bias"].append(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm3d):
            bns += 1
            if not partial_bn or bns == 1:
                groups["BN scale/shift"] += list(m.parameters())
        elif len(m._modules) == 0 and list(m.parameters()):
            raise ValueError(f"New atomic module type: {type(m)}")
    mults = {"first_conv_weight": (1, 1), "first_conv_bias": (2, 0), "normal_weight": (1, 1), "normal_bias": (2, 0),
             "BN scale/shift": (1, 0), "lr5_weight": (5, 1), "lr10_bias": (10, 0)}  # fmt: skip
    return {name: ({id(p) for p in ps}, mults[name]) for name, ps in groups.items() if ps}


@pytest.mark.parametrize("partial_bn", [False, True])
def test_the_tsm_policy_gives_tsms_groups(partial_bn):
    model = build_model("tsm_r50", 174, num_segments=8, width=8)
    model.train()
    freeze_batchnorm(model, "partial" if partial_bn else "none")
    groups = tsm_param_groups(model, lr=0.01, weight_decay=5e-4)
    ours = {g["name"]: ({id(p) for p in g["params"]}, (g["lr_mult"], g["decay_mult"])) for g in groups}
    assert ours == tsm_reference_policy(model, partial_bn)
    for g in groups:
        assert g["lr"] == pytest.approx(0.01 * g["lr_mult"]) and g["weight_decay"] == pytest.approx(
            5e-4 * g["decay_mult"]
        )
    # operators TSM has no rule for: their own group, GCT's beta without decay
    gct = build_model("tsm_r50", 174, num_segments=8, width=8, context="gct")
    named = {g["name"]: g for g in tsm_param_groups(gct, 0.01, 5e-4)}
    betas = {id(m.beta) for m in gct.modules() if type(m).__name__ == "GCT"}
    assert betas <= {id(p) for p in named["BN scale/shift"]["params"]}
    assert {id(p) for p in gct.parameters()} == {id(p) for g in named.values() for p in g["params"]}


def test_scale_jitter_draws_short_sides_uniformly_in_its_range():
    torch.manual_seed(0)
    crop = ScaleJitterCrop(224, (256, 320))
    draws = [crop.draw(256, 340) for _ in range(4000)]
    scales = torch.tensor([d[0] for d in draws])
    assert scales.min() == 256 and scales.max() == 320
    counts = torch.bincount(scales - 256, minlength=65).float()
    assert counts.min() > 30 and counts.max() < 100  # ~61.5 each: uniform over the 65 integers
    for scale, top, left, region in draws[:200]:
        assert region == round(224 * 256 / scale) and 0 <= top <= 256 - region and 0 <= left <= 340 - region
    clip = torch.randint(0, 255, (4, 3, 256, 340), dtype=torch.uint8)
    assert crop(clip).shape == (4, 3, 224, 224)
    out = build_transform(True, size=224, crop="scale_jitter", scale_range=(256, 320))(clip)
    assert out.shape == (1, 3, 4, 224, 224)


def test_the_ssv2_flip_swaps_exactly_the_left_right_classes(synth, tmp_path):
    labels = json.loads((DATA / "ssv2" / "labels.json").read_text())
    classes = [name for name, _ in sorted(labels.items(), key=lambda kv: int(kv[1]))]
    assert left_right_pairs(classes) == {86: 87, 87: 86, 93: 94, 94: 93, 166: 167, 167: 166}  # mmaction2's map
    assert left_right_pairs(["Pulling it right out", "Putting something upright"]) == {}
    # in a data set: half the items flipped, exactly those with a pair swapped, pixels mirrored
    cfg = tiny_config(synth, tmp_path / "run", "data.flip=swap_left_right")
    flipping = make_dataset(cfg, "train")
    assert flipping.flip_pairs == {0: 1, 1: 0}  # the synthetic set's "from left to right" / "from right to left"
    plain = make_dataset(tiny_config(synth, tmp_path / "run", "data.flip=false"), "train")
    flips = 0
    for epoch in range(3):
        flipping.set_epoch(epoch)
        plain.set_epoch(epoch)
        for i in range(len(plain)):
            (a, la, _), (b, lb, _) = plain[i], flipping[i]
            if torch.equal(a, b):
                assert la == lb
            else:
                flips += 1
                assert torch.equal(b, a.flip(-1)) and lb == {0: 1, 1: 0}.get(la, la)
    assert 8 <= flips <= 28  # of 36 items
    kinetics = DATA / "kinetics"
    k400 = ["data.format=kinetics", f"data.root={kinetics / 'val'}", "model.num_classes=400",
            f"data.train_annotation={kinetics / 'k400_val_sample.csv'}",
            f"data.labels={kinetics / 'label_map_k400.txt'}"]  # fmt: skip
    with pytest.raises(ConfigError, match="no class names of this data set differ only by left/right"):
        make_dataset(tiny_config(synth, tmp_path / "run", "data.flip=swap_left_right", *k400), "train")


def test_colour_jitter_and_randaugment_change_every_frame_of_a_clip_alike():
    torch.manual_seed(1)
    frame = torch.randint(0, 255, (1, 48, 64, 3), dtype=torch.uint8)
    clip = frame.expand(6, -1, -1, -1).contiguous()  # six identical frames
    for kwargs in ({"color_jitter": 0.4}, {"randaugment": [2, 9]}, {"color_jitter": 0.4, "randaugment": [2, 9]}):
        changed = 0
        for _ in range(5):
            out = build_transform(True, size=32, flip=False, **kwargs)(clip)[0]  # (3, T, 32, 32)
            assert all(torch.equal(out[:, t], out[:, 0]) for t in range(6)), kwargs  # one draw for the clip
            plain = build_transform(True, size=32, flip=False)
            torch.manual_seed(torch.initial_seed())
            changed += int(out.float().std() != plain(clip)[0].float().std())
        assert changed > 0, kwargs


def test_mixup_and_cutmix_targets_sum_to_one_and_mix_what_they_say():
    torch.manual_seed(0)
    clips, labels = torch.rand(4, 3, 2, 16, 16), torch.tensor([0, 1, 2, 3])
    mixed, target = MixupCutmix(5, mixup_alpha=0.4)(clips, labels)
    lam = float(target[0, 0])
    assert torch.allclose(target.sum(1), torch.ones(4)) and torch.allclose(target[0, 3], torch.tensor(1 - lam))
    assert torch.allclose(mixed, lam * clips + (1 - lam) * clips.flip(0))
    mixed, target = MixupCutmix(5, cutmix_alpha=1.0)(clips, labels)
    assert torch.allclose(target.sum(1), torch.ones(4))
    pasted = (mixed != clips).any(1)  # (N, T, H, W): where the partner's pixels are
    assert torch.equal(pasted[:, 0], pasted[:, 1])  # the same box in every frame
    kept = 1 - pasted[0, 0].float().mean()
    assert float(target[0, 0]) == pytest.approx(float(kept), abs=1e-6)
    both = MixupCutmix(5, mixup_alpha=0.2, cutmix_alpha=1.0)
    for _ in range(10):
        assert torch.allclose(both(clips, labels)[1].sum(1), torch.ones(4))


def test_the_weight_average_equals_a_hand_computed_one_and_resumes_exactly(synth, tmp_path):
    decay = 0.9
    seen = []

    def record(epoch, iteration):
        if len(seen) < 3:
            seen.append({k: v.detach().clone() for k, v in trainer.model.state_dict().items()})
            if len(seen) == 3:
                expected = seen[0]
                for state in seen[1:]:
                    expected = {k: decay * expected[k] + (1 - decay) * state[k] if state[k].is_floating_point()
                                else state[k] for k in state}  # fmt: skip
                got = trainer.ema.module.state_dict()
                for k, v in expected.items():
                    if v.is_floating_point():
                        torch.testing.assert_close(got[k], v, rtol=1e-6, atol=1e-7, msg=k)

    extra = ("train.ema=0.9", "train.mixup=0.2", "train.cutmix=1.0", "train.checkpoint_every=1")
    with Trainer(tiny_config(synth, tmp_path / "full", *extra), progress=False, on_iteration=record) as trainer:
        metrics = trainer.fit()
    assert len(seen) == 3 and {"ema_top1", "ema_top5", "ema_mean_class_accuracy"} <= set(metrics)
    full = load_checkpoint(tmp_path / "full" / "latest.pt")
    assert "model_ema" in full and int(full["ema_updates"]) == 6  # 3 steps x 2 epochs

    class Killed(Exception):
        pass

    def kill(epoch, iteration):
        if (epoch, iteration) == (1, 1):
            raise Killed

    with pytest.raises(Killed):
        Trainer(tiny_config(synth, tmp_path / "part", *extra), progress=False, on_iteration=kill).fit()
    Trainer(tiny_config(synth, tmp_path / "part", *extra), resume=True, progress=False).fit()
    part = load_checkpoint(tmp_path / "part" / "latest.pt")
    for key in ("model", "model_ema"):
        for k, v in full[key].items():
            torch.testing.assert_close(part[key][k], v, rtol=0, atol=1e-6, msg=f"{key}.{k}")
    # seqctx test --ema evaluates the averaged weights
    assert main(["test", "--checkpoint", str(tmp_path / "full" / "latest.pt"), "--ema", "--out",
                 str(tmp_path / "ema.csv")]) == 0  # fmt: skip
    assert json.loads((tmp_path / "ema.json").read_text())["weights"] == "model_ema"


def test_repeated_augmentation_deals_each_video_k_times_across_ranks_without_loss(synth, tmp_path):
    size, k = 10, 3
    ranks = [EpochSampler(size, shuffle=True, seed=5, rank=r, world=2, batch_size=1, repeats=k) for r in range(2)]
    for s in ranks:
        s.set_epoch(4)
    dealt = [s.indices() for s in ranks]
    assert [len(d) for d in dealt] == [5, 5] == [len(s) for s in ranks]  # the epoch keeps its length
    g = torch.Generator().manual_seed(5 * 100_003 + 4)
    stream = [i + c * size for i in torch.randperm(size, generator=g).tolist() for c in range(k)]
    together = sorted(dealt[0] + dealt[1])
    assert together == sorted(stream[:size])  # the stream's first items, each once: none lost, none doubled
    videos = [i % size for i in together]
    assert max(videos.count(v) for v in set(videos)) <= k
    # a copy is another draw of the same video
    data = make_dataset(tiny_config(synth, tmp_path / "run", "data.repeat_aug=3"), "train")
    (a, la, ma), (b, lb, mb) = data[1], data[1 + len(data)]
    assert la == lb and ma["id"] == mb["id"] and not torch.equal(a, b)


def test_the_confusion_matrix_of_a_known_prediction_set(synth, tmp_path):
    scores = torch.eye(3)[[0, 1, 1, 2, 0, 0]]  # predictions 0 1 1 2 0 0
    labels = torch.tensor([0, 1, 2, 2, 1, -1])  # the last one unlabelled
    matrix = confusion_matrix(scores, labels, 3)
    assert matrix.tolist() == [[1, 0, 0], [1, 1, 0], [0, 1, 1]]
    assert top_confusions(matrix, ["a", "b", "c"]) == [("b", "a", 1), ("c", "b", 1)]
    run = tmp_path / "run"
    Trainer(tiny_config(synth, run, "train.epochs=1"), progress=False).fit()
    assert main(["test", "--checkpoint", str(run / "latest.pt")]) == 0
    record = json.loads((run / "predictions_confusion.json").read_text())
    assert len(record["classes"]) == 4 and sum(map(sum, record["matrix"])) == 4
    assert sum(v["videos"] for v in record["per_class"].values()) == 4
    assert (run / "predictions_confusion.png").stat().st_size > 1000


@pytest.mark.parametrize("dims", [2, 3])
def test_cgc_keeps_channels_last(dims):
    from seqctx.modules import ContextGatedConv3d

    layer = (ContextGatedConv2d if dims == 2 else ContextGatedConv3d)(8, 8, 3, padding=1).eval()
    shape = (2, 8, 6, 6) if dims == 2 else (2, 8, 4, 6, 6)
    fmt = torch.channels_last if dims == 2 else torch.channels_last_3d
    x = torch.randn(shape).contiguous(memory_format=fmt)
    y = layer(x)
    assert y.is_contiguous(memory_format=fmt)
    torch.testing.assert_close(y, layer(x.contiguous()))


@pytest.mark.parametrize(
    ("setting", "message"),
    [("train.ema=2", "'train.ema' is the decay"), ("data.randaugment=[2]", "'data.randaugment' is \\[num_ops"),
     ("data.crop=scale_jitter", "'data.scale_range' must be \\[low, high\\] with data.size \\(400\\)")],
)  # fmt: skip
def test_the_tools_bad_values_are_config_errors(synth, tmp_path, setting, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config(synth, tmp_path / "run", "data.size=400", "data.scale_size=400", setting)
