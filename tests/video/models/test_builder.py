import pytest
import torch
import torchvision
from torch import nn

from seqctx.modules import GCT, ChannelEquilibrium, ContextGatedConv2d, ContextGatedConv3d, GatherExcite, SqueezeExcite
from seqctx.video.models import MODELS, build_model, list_models

TINY = {"width": 8, "input_size": 32}
MATRIX_MODELS = ["resnet18", "resnet50", "tsn_r50", "tsm_r18", "tsm_r50", "p3d_r50", "i3d_r50"]


def tiny_input(name, n=2):
    t = 1 if name.startswith("resnet") else (8 if name[:3] in ("p3d", "i3d") else 4)
    return torch.randn(n, 3, t, 32, 32)


def segments(name):
    return 8 if name[:3] in ("p3d", "i3d") else 4


@pytest.mark.parametrize("name", MATRIX_MODELS)
def test_every_model_and_context_runs_forward_and_backward(name):
    for context in (None, *MODELS[name].contexts):
        model = build_model(name, 5, num_segments=segments(name), context=context, **TINY)
        x = tiny_input(name)
        out = model(x)
        assert out.shape == (2, 5), (name, context)
        out.square().sum().backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), (name, context)


def count(model):
    return sum(p.numel() for p in model.parameters())


def test_operators_sit_where_the_papers_put_them():
    m = build_model("resnet50", 10, context="gct")
    gcts = [n for n, mod in m.named_modules() if isinstance(mod, GCT)]
    assert "trunk.ctx1" in gcts and "trunk.layer1.0.ctx1" in gcts and "trunk.layer1.0.ctx3" in gcts
    assert "trunk.layer2.0.downsample.ctx" in gcts  # the official GCT ResNet gates the shortcut conv too
    assert len(gcts) == 1 + 16 * 3 + 4  # the stem, every conv of the 16 bottlenecks, the 4 projections
    m = build_model("i3d_r50", 10, num_segments=8, context="gct")
    gcts = [n for n, mod in m.named_modules() if isinstance(mod, GCT)]
    assert len(gcts) == 16 * 2 and "trunk.layer1.0.ctx2" in gcts and "trunk.layer1.0.ctx1" not in gcts
    m = build_model("p3d_r50", 10, num_segments=8, context="gct")
    block = m.trunk.layer1[0]  # a P3D block: conv1, conv2, conv2_t, conv3 -> GCT before the last two
    assert isinstance(block.ctx2_t, GCT) and isinstance(block.ctx3, GCT) and isinstance(block.ctx2, nn.Identity)
    m = build_model("i3d_r50", 10, num_segments=8, context="gct_all")
    assert sum(isinstance(mod, GCT) for mod in m.modules()) == 1 + 16 * 3 + 4
    m = build_model("tsm_r50", 10, num_segments=8, context="cgc")
    cgcs = [mod for mod in m.modules() if isinstance(mod, ContextGatedConv2d)]
    assert len(cgcs) == 17 and all(c.num_segments == 8 and c.context_size == (c.kernel_size[0],) * 3 for c in cgcs)
    m = build_model("p3d_r50", 10, num_segments=8, context="cgc1d")
    cgcs = [mod for mod in m.modules() if isinstance(mod, ContextGatedConv3d)]
    assert len(cgcs) == 1 + 8 and all(c.kernel_size[1:] == (1, 1) for c in cgcs)  # stem 5x1x1 + 8 blocks
    m = build_model("p3d_r50", 10, num_segments=8, context="cgc3d")
    cgcs = [mod for mod in m.modules() if isinstance(mod, ContextGatedConv3d)]
    assert len(cgcs) == 17 and all(c.kernel_size[0] == 1 for c in cgcs)
    assert m.trunk.layer1[0].conv2.context_size == (3, 3, 3)
    ce = ChannelEquilibrium
    for ctx, op in (("se", SqueezeExcite), ("ge", GatherExcite), ("ce", ce), ("ce_all", ce)):
        m = build_model("i3d_r50", 10, num_segments=8, context=ctx, width=8)
        assert isinstance(m.trunk.layer2[1].ctx_branch, op)
        assert m.trunk.layer2[1].ctx_branch is not None


# (name, classes, context, kwargs, paper params in M, tolerance in M)
PARAM_TABLE = [
    ("resnet50", 1000, None, {}, 25.56, 0.005),
    ("resnet50", 1000, "gct", {}, 25.62, 0.005),  # the GCT paper prints 25.68M
    ("resnet50", 1000, "cgc", {}, 25.59, 0.005),
    ("resnet50", 1000, "se", {}, 28.09, 0.005),
    ("tsn_r50", 174, None, {"num_segments": 8}, 23.86, 0.006),
    ("tsm_r50", 174, None, {"num_segments": 8}, 23.86, 0.006),
    ("p3d_r50", 174, None, {"num_segments": 32}, 25.38, 0.01),
    ("i3d_r50", 400, None, {"num_segments": 32}, 28.0, 0.1),
    # CGC paper Table 3: the video gate's t time slices (sec. 3.3) give exactly these
    ("tsm_r50", 174, "cgc", {"num_segments": 16}, 24.09, 0.005),
    ("p3d_r50", 174, "cgc3d", {"num_segments": 32}, 25.61, 0.005),
    ("p3d_r50", 174, "cgc1d3d", {"num_segments": 32}, 25.62, 0.005),
]
# variants whose cost the issue asks us to report next to the papers' figures
REPORTED = [
    ("tsm_r50", 174, "cgc", {"num_segments": 8}, 24.07),  # ours does not depend on T: 24.087M
    ("p3d_r50", 174, "cgc1d", {"num_segments": 32}, 25.39),
    ("resnet50", 1000, "ge_theta", {}, 31.2),
    ("resnet50", 1000, "ge_theta_plus", {}, 33.7),
    ("resnet50", 1000, "ge", {}, 25.56),
    ("resnet50", 1000, "ce", {}, None),
    ("i3d_r50", 400, "gct", {"num_segments": 32}, None),
    ("i3d_r101", 400, None, {"num_segments": 32}, None),
]


def test_parameter_counts_match_the_papers(capsys):
    lines = []
    for name, classes, context, kw, paper, tol in PARAM_TABLE:
        got = count(build_model(name, classes, context=context, **kw)) / 1e6
        lines.append(f"{name:10s} {str(context):14s} {classes:5d}  {got:7.3f}M  paper {paper:.2f}M")
        assert abs(got - paper) <= tol, lines[-1]
    for name, classes, context, kw, paper in REPORTED:
        got = count(build_model(name, classes, context=context, **kw)) / 1e6
        ref = f"paper {paper:.2f}M" if paper else ""
        lines.append(f"{name:10s} {str(context):14s} {classes:5d}  {got:7.3f}M  {ref}")
    with capsys.disabled():
        print("\nparameters (ours vs. the papers):\n" + "\n".join(lines))


def branch_blocks(model):
    """The residual blocks (``layerS.B``) whose branch carries an operator."""
    return [n.removeprefix("trunk.").removesuffix(".ctx_branch") for n, m in model.named_modules()
            if n.endswith("ctx_branch") and not isinstance(m, nn.Identity)]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("resnet18", [f"layer{s}.{b}" for s in range(1, 5) for b in range(2)]),  # "each residual block"
        ("resnet50", [f"layer{s}.{b}" for s, n in ((1, 3), (2, 4), (3, 6)) for b in range(n)]),  # not 2048-ch.
        ("resnet101", ["layer1.0", "layer1.1", "layer1.2", "layer2.0", "layer2.1", "layer2.2", "layer2.3"]),
        ("i3d_r50", [f"layer{s}.{b}" for s, n in ((1, 3), (2, 4), (3, 6)) for b in range(n)]),
    ],
)
def test_ce_follows_the_papers_placement_and_ce_all_fills_every_block(name, expected):
    kw = {"num_segments": 8, **TINY}
    assert branch_blocks(build_model(name, 10, context="ce", **kw)) == expected
    every = branch_blocks(build_model(name, 10, context="ce_all", **kw))
    assert len(every) == {"resnet18": 8, "resnet101": 33}.get(name, 16) and every[: len(expected)] == expected


def test_ce_parameter_counts(capsys):
    rows = []
    for depth, paper_rule, every in ((18, 12.039, 12.039), (50, 29.330, 35.624), (101, 45.173, 63.538)):
        got = [count(build_model(f"resnet{depth}", 1000, context=c)) / 1e6 for c in ("ce", "ce_all")]
        rows.append(f"resnet{depth}: ce {got[0]:.3f}M, ce_all {got[1]:.3f}M")
        assert got == pytest.approx([paper_rule, every], abs=5e-4), rows[-1]
    with capsys.disabled():
        print("\nCE parameters (paper's placement, every block):\n" + "\n".join(rows))


def test_gct_resnet50_matches_the_official_count_and_stride_in_1x1_moves_the_stride():
    m = build_model("resnet50", 1000, context="gct", stride_in_1x1=True)
    assert count(m) == 25_624_625  # z-x-yang/GCT's resnet50: 53 GCTs
    first = m.trunk.layer2[0]
    assert first.conv1.stride == (2, 2) and first.conv2.stride == (1, 1)
    plain = build_model("resnet50", 1000)
    assert plain.trunk.layer2[0].conv1.stride == (1, 1) and plain.trunk.layer2[0].conv2.stride == (2, 2)
    assert m(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
    assert set(plain.state_dict()) <= set(m.state_dict())  # torchvision names stay valid
    i3d = build_model("i3d_r50", 10, num_segments=8, stride_in_1x1=True, **TINY)
    assert i3d.trunk.layer3[0].conv1.stride == (1, 2, 2) and i3d(torch.randn(1, 3, 8, 32, 32)).shape == (1, 10)
    with pytest.raises(ValueError, match="stride_in_1x1 applies to bottleneck"):
        build_model("resnet18", 10, stride_in_1x1=True)


def test_ge_theta_costs_match_the_paper_within_a_percent():
    base = count(build_model("resnet50", 1000))
    ge = count(build_model("resnet50", 1000, context="ge_theta"))
    plus = count(build_model("resnet50", 1000, context="ge_theta_plus"))
    assert abs(ge / 1e6 - 31.2) < 0.15 and abs(plus / 1e6 - 33.7) < 0.1
    se = count(build_model("resnet50", 1000, context="se"))
    assert plus - ge == se - base  # theta-plus's excite MLP is exactly SE's


def test_tsn_is_frame_order_blind_and_tsm_is_not():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 32, 32)
    perm = x[:, :, [2, 0, 3, 1]]
    for name, blind in (("tsn_r18", True), ("tsm_r18", False)):
        model = build_model(name, 5, num_segments=4, dropout=0.0, **TINY).eval()
        same = torch.allclose(model(x), model(perm), atol=1e-6)
        assert same is blind, name
    cgc = build_model("tsn_r18", 5, num_segments=4, context="cgc", dropout=0.0, **TINY).eval()
    assert not torch.allclose(cgc(x), cgc(perm), atol=1e-6)  # the cube context sees the order


def test_shapes_through_the_3d_trunks():
    x = torch.randn(1, 3, 32, 64, 64)
    p3d = build_model("p3d_r50", 3, num_segments=32, **{**TINY, "input_size": 64})
    assert p3d.trunk(x).shape == (1, 256, 8, 2, 2)  # 32 frames -> 8, no temporal pooling after the stem
    i3d = build_model("i3d_r50", 3, num_segments=32, **{**TINY, "input_size": 64})
    assert i3d.trunk(x).shape == (1, 256, 8, 2, 2)
    assert i3d.trunk.conv1.kernel_size == (5, 7, 7)
    assert [b.conv1.kernel_size[0] for b in i3d.trunk.layer3] == [3, 1, 3, 1, 3, 1]
    assert [b.conv2_t is not None for b in p3d.trunk.layer4] == [False, True, False]
    w = p3d.trunk.layer1[0].conv2_t.weight  # identity at init: centre tap 1
    assert torch.equal(w[:, :, 1, 0, 0], torch.eye(8)) and w[:, :, [0, 2]].abs().sum() == 0


def test_errors_name_the_model_and_valid_choices():
    with pytest.raises(ValueError, match="context 'cgc' is not available for p3d_r50; valid choices: None, gct"):
        build_model("p3d_r50", 10, context="cgc")
    with pytest.raises(ValueError, match="unknown model 'vgg16'; valid models: resnet18"):
        build_model("vgg16", 10)
    model = build_model("tsm_r18", 5, num_segments=4, **TINY)
    with pytest.raises(ValueError, match="built for num_segments=4, got clips of 8 frames"):
        model(torch.randn(1, 3, 8, 32, 32))
    assert "i3d_r101" in list_models() and "tsm_r50" in list_models()


def test_image_models_take_images_and_clips():
    model = build_model("resnet18", 7, dropout=0.0, **TINY).eval()
    img = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(img), model(img.unsqueeze(2)))


def test_state_dict_round_trip_with_contexts():
    a = build_model("tsm_r18", 5, num_segments=4, context="cgc", **TINY).eval()
    b = build_model("tsm_r18", 5, num_segments=4, context="cgc", **TINY).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 3, 4, 32, 32)
    torch.testing.assert_close(a(x), b(x))


def test_pretrained_torchvision_weights_load_and_inflate(tmp_path):
    tv = torchvision.models.resnet50()
    path = tmp_path / "resnet50.pth"
    torch.save(tv.state_dict(), path)
    tsn = build_model("tsn_r50", 174, pretrained=path)
    assert torch.equal(tsn.trunk.layer3[2].conv2.weight, tv.layer3[2].conv2.weight)
    i3d = build_model("i3d_r50", 400, num_segments=8, context="gct", pretrained=path)
    w2d, w3d = tv.conv1.weight, i3d.trunk.conv1.weight  # (64, 3, 7, 7) -> (64, 3, 5, 7, 7) / 5
    torch.testing.assert_close(w3d, w2d.unsqueeze(2).expand(-1, -1, 5, -1, -1) / 5)
    torch.testing.assert_close(i3d.trunk.layer1[0].conv1.weight.sum(2), tv.layer1[0].conv1.weight)
    p3d = build_model("p3d_r50", 174, num_segments=8, pretrained=path)
    assert torch.equal(p3d.trunk.layer2[0].conv2.weight[:, :, 0], tv.layer2[0].conv2.weight)
    # a clip of identical frames through an inflated stem gives the 2D response (away from the ends)
    frame = torch.randn(1, 3, 32, 32)
    clip = frame.unsqueeze(2).expand(-1, -1, 7, -1, -1)
    out3d = i3d.trunk.conv1(clip)[:, :, 3]
    torch.testing.assert_close(out3d, tv.conv1(frame), rtol=1e-4, atol=1e-5)


def test_load_report_lists_what_did_not_load(tmp_path):
    tv = torchvision.models.resnet18()
    sd = tv.state_dict()
    sd["extra.weight"] = torch.zeros(1)
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": sd}, path)
    from seqctx.video.models import load_pretrained

    model = build_model("tsm_r18", 10, num_segments=4, context="gct")
    report = load_pretrained(model, path)
    assert report.unexpected == ["extra.weight"]
    assert any(k.startswith("head.fc.weight") for k in report.mismatched)  # 1000 vs 10 classes
    assert "trunk.layer1.0.ctx1.alpha" in report.missing and "head.fc.weight" in report.missing
    assert "trunk.conv1.weight" in report.loaded and not report.inflated
    assert "missing" in str(report)


def test_every_family_context_has_its_layer_fields_and_names_are_registered_once():
    from seqctx.video.models import FAMILIES
    from seqctx.video.models.builder import CONTEXT_FIELDS

    assert {c for f in FAMILIES.values() for c in f.contexts} <= set(CONTEXT_FIELDS)
    assert list_models() == [f.model_name(d) for f in FAMILIES.values() for d in f.depths]
    assert {MODELS[n].family.dims for n in ("p3d_r50", "i3d_r101")} == {3} and MODELS["tsm_r18"].family.temporal_shift
