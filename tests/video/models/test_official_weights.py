"""Official checkpoints as starting points: each release's layout, written here from our own models
by the inverse of the mapping (as the official code names its modules), must load back exactly."""

import logging
import re

import pytest
import torch

from seqctx.errors import CheckpointError
from seqctx.video.models import build_model, load_pretrained
from seqctx.video.models.formats import detect_format

TINY = {"width": 8, "input_size": 32}


def randomised(model):
    """Every parameter and BN statistic random, so that a wrong mapping cannot go unseen."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) + 0.5 if "running_var" in name else torch.randn_like(t) * 0.1)
    return model.eval()


def as_tsm(state, shifted=True):
    """mit-han-lab/temporal-shift-module: ``module.base_model.*`` (``conv1.net`` in shifted
    blocks), ``module.new_fc.*``, under ``state_dict``."""
    out = {}
    for k, v in state.items():
        if k.startswith("head.fc."):
            out["module.new_fc." + k.removeprefix("head.fc.")] = v
            continue
        k = k.removeprefix("trunk.")
        if shifted and re.match(r"layer\d+\.\d+\.conv1\.", k):
            k = k.replace(".conv1.", ".conv1.net.")
        out["module.base_model." + k] = v
    return {"epoch": 25, "arch": "resnet50", "state_dict": out, "best_prec1": 47.3}


def as_gct(state):
    """z-x-yang/GCT (maskrcnn-benchmark ResNet): ``stem.conv1.{0,1}``, ``convK.{0: GCT, 1: conv}``,
    ``downsample.{0: GCT, 1: conv, 2: BN}``; GCT parameters ``(1, C, 1, 1)``."""
    out = {}
    for k, v in state.items():
        if k.startswith("head."):
            out["module." + k.removeprefix("head.")] = v
            continue
        k = k.removeprefix("trunk.")
        if k.split(".")[-1] in ("alpha", "gamma", "beta"):
            v = v.view(1, -1, 1, 1)
        k = re.sub(r"^ctx1\.", "stem.conv1.0.", k)
        k = re.sub(r"^conv1\.", "stem.conv1.1.", k)
        k = re.sub(r"^bn1\.", "stem.bn1.", k)
        k = re.sub(r"\.ctx(\d)\.", r".conv\1.0.", k)
        k = re.sub(r"\.conv(\d)\.(weight)$", r".conv\1.1.\2", k)
        k = k.replace(".downsample.1.", ".downsample.2.").replace(".downsample.0.", ".downsample.1.")
        k = k.replace(".downsample.ctx.", ".downsample.0.")
        out["module." + k] = v
    return {"state_dict": out}


def as_cgc(state):
    """XudongLinthu/context-gated-convolution: torchvision names, the gate as ``ce``, ``ce_bn``,
    ``ci_bn2``, ``ci``, ``ci_bn``, ``gd``, ``gd2`` inside each conv."""
    names = {"encode": "ce", "encode_norm": "ce_bn", "interact_in_norm": "ci_bn2", "interact": "ci",
             "interact_norm": "ci_bn", "decode_in": "gd", "decode_out": "gd2"}  # fmt: skip
    out = {}
    for k, v in state.items():
        k = k.removeprefix("trunk.").removeprefix("head.")
        m = re.match(r"^(.+)\.context_gate\.(\w+)\.(.+)$", k)
        out[f"{m[1]}.{names[m[2]]}.{m[3]}" if m else k] = v
    return out


def round_trip(tmp_path, source, layout, build):
    path = tmp_path / "official.pth"
    torch.save(layout(source.state_dict()), path)
    target = build()
    report = load_pretrained(target, path)
    return target.eval(), report


def test_tsm_release_loads_exactly_and_another_class_count_keeps_its_classifier(tmp_path, caplog):
    ours = randomised(build_model("tsm_r50", 174, num_segments=8, **TINY))
    loaded, report = round_trip(tmp_path, ours, as_tsm, lambda: build_model("tsm_r50", 174, num_segments=8, **TINY))
    assert report.layout == "tsm" and not report.missing and not report.unexpected and not report.mismatched
    x = torch.randn(1, 3, 8, 32, 32)
    torch.testing.assert_close(loaded(x), ours(x), rtol=0, atol=0)
    with caplog.at_level(logging.INFO, logger="seqctx.video.models.weights"):
        other = build_model("tsm_r50", 10, num_segments=8, **TINY)
        report = load_pretrained(other, tmp_path / "official.pth")
    assert report.missing == ["head.fc.weight", "head.fc.bias"]
    assert "the classifier has another class count" in caplog.text
    assert "head.fc.weight (174, 256) -> (10, 256)" in caplog.text
    assert torch.equal(other.trunk.layer3[1].conv1.weight, ours.trunk.layer3[1].conv1.weight)
    tsn, report = round_trip(tmp_path, ours, lambda s: as_tsm(s, shifted=False),
                             lambda: build_model("tsn_r50", 174, num_segments=8, **TINY))  # fmt: skip
    assert report.layout == "tsm" and len(report.loaded) == len(tsn.state_dict())


def test_gct_release_builds_exactly_with_stride_in_1x1_and_inflates_into_i3d(tmp_path):
    def gct_resnet50():
        return build_model("resnet50", 1000, context="gct", stride_in_1x1=True, **TINY)

    ours = randomised(gct_resnet50())
    loaded, report = round_trip(tmp_path, ours, as_gct, gct_resnet50)
    assert report.layout == "gct" and not report.missing and not report.unexpected
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x), ours(x), rtol=0, atol=0)
    assert sum(k.endswith(".alpha") for k in report.loaded) == 53  # the stem, 48 convs, 4 shortcuts
    i3d = build_model("i3d_r50", 400, num_segments=8, context="gct_all", stride_in_1x1=True, **TINY)
    report = load_pretrained(i3d, tmp_path / "official.pth")
    assert "trunk.layer1.0.conv1.weight" in report.inflated and report.missing == ["head.fc.weight", "head.fc.bias"]
    assert torch.equal(i3d.trunk.layer2[0].downsample.ctx.gamma, ours.trunk.layer2[0].downsample.ctx.gamma)
    torch.testing.assert_close(i3d.trunk.layer1[0].conv1.weight.sum(2), ours.trunk.layer1[0].conv1.weight)
    i3d_gct = build_model("i3d_r50", 400, num_segments=8, context="gct", stride_in_1x1=True, **TINY)
    report = load_pretrained(i3d_gct, tmp_path / "official.pth")  # GCT before the last two convs only
    assert "layer1.0.conv1.0.alpha" in report.unexpected and "trunk.layer1.0.ctx2.alpha" in report.loaded


def test_cgc_release_loads_exactly(tmp_path):
    ours = randomised(build_model("resnet50", 1000, context="cgc", **TINY))
    loaded, report = round_trip(
        tmp_path, ours, as_cgc, lambda: build_model("resnet50", 1000, context="cgc", **TINY)
    )  # fmt: skip
    assert report.layout == "cgc" and not report.missing and not report.unexpected
    assert "trunk.layer2.0.conv2.context_gate.decode_out.weight" in report.loaded
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x), ours(x), rtol=0, atol=0)


def test_layouts_are_told_apart_by_their_keys():
    assert detect_format(["conv1.weight", "layer1.0.conv1.weight", "fc.weight"]) == "torchvision"
    assert detect_format(["base_model.conv1.weight", "new_fc.weight"]) == "tsm"
    assert detect_format(["stem.conv1.0.alpha", "stem.conv1.1.weight"]) == "gct"
    assert detect_format(["conv1.weight", "conv1.gd2.weight"]) == "cgc"


def test_a_tensor_of_another_shape_fails_loudly(tmp_path):
    gct = randomised(build_model("resnet50", 1000, context="gct", stride_in_1x1=True, **TINY))
    path = tmp_path / "gct.pth"
    torch.save(as_gct(gct.state_dict()), path)
    wider = build_model("resnet50", 1000, context="gct", stride_in_1x1=True, width=16, input_size=32)
    with pytest.raises(CheckpointError, match=r"gct layout\) do not fit the model: \d+ tensors have other shapes: "
                       r"trunk\.conv1\.weight \(8, 3, 7, 7\) -> \(16, 3, 7, 7\)"):  # fmt: skip
        load_pretrained(wider, path)
