import pytest
import torch
import torchvision
from torch import nn

from seqctx.modules import GCT, ChannelEquilibrium, ContextGatedConv2d, convert_to_cgc, insert_context


def small_net():
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 16, 1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
    )


def test_insert_gct_before_every_conv_keeps_names_and_output():
    net = small_net().eval()
    x = torch.randn(2, 3, 8, 8)
    before = net(x)
    keys = set(net.state_dict())
    report = insert_context(net, "gct")
    assert len(report) == 3 and report.added_parameters == 3 * (3 + 16 + 16)
    assert isinstance(net[0].context, GCT) and net[0].context.channels == 3
    assert keys <= set(net.state_dict())  # existing checkpoints still load
    torch.testing.assert_close(net(x), before)  # GCT is an identity at init
    with torch.no_grad():
        net[3].context.gamma.fill_(1.0)
        net[3].context.beta.fill_(0.5)
    assert not torch.allclose(net(x), before)  # and really sits in the forward pass


def test_insert_ce_after_every_norm_runs_on_the_normalised_output():
    net = small_net()
    report = insert_context(net, "ce", position="after_norm")
    assert len(report) == 2
    assert isinstance(net[1].context, ChannelEquilibrium)
    seen = {}
    net[1].context.register_forward_hook(lambda m, a, o: seen.setdefault("in", a[0]))
    x = torch.randn(4, 3, 8, 8)
    net(x)
    bn_out = torch.nn.functional.batch_norm(net[0](x), None, None, net[1].weight, net[1].bias, True)
    torch.testing.assert_close(seen["in"], bn_out, rtol=1e-4, atol=1e-5)


def test_surgery_on_torchvision_resnet():
    model = torchvision.models.resnet18(num_classes=10)
    plain = sum(p.numel() for p in model.parameters())
    report = convert_to_cgc(model)
    n3x3 = sum(1 for m in torchvision.models.resnet18().modules() if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1)
    assert len(report) == n3x3  # the 7x7 stem and every 3x3; the 1x1 downsamples stay
    assert isinstance(model.layer1[0].conv1, ContextGatedConv2d)
    assert isinstance(model.layer2[0].downsample[0], nn.Conv2d)
    assert not isinstance(model.layer2[0].downsample[0], ContextGatedConv2d)
    assert sum(p.numel() for p in model.parameters()) == plain + report.added_parameters
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 10)
    report2 = insert_context(model, "gct", include=lambda name, m: name.startswith("layer4"))
    assert all(line.startswith("layer4") for line in report2.changed)
    assert "modules changed" in str(report2)


def test_convert_keeps_weights_and_passes_kwargs():
    net = small_net()
    w = net[0].weight.clone()
    convert_to_cgc(net, num_segments=2)
    assert torch.equal(net[0].weight, w) and net[0].num_segments == 2
    assert isinstance(net[3], nn.Conv2d) and not isinstance(net[3], ContextGatedConv2d)
    assert net(torch.randn(4, 3, 8, 8)).shape == (4, 32, 4, 4)


def test_insert_context_rejects_bad_position():
    with pytest.raises(ValueError, match="position must be 'before_conv' or 'after_norm', got 'after_conv'"):
        insert_context(small_net(), "gct", position="after_conv")


def test_convert_to_cgc_keeps_the_operators_insert_context_attached():
    model = torchvision.models.resnet50(num_classes=10).eval()
    insert_context(model, "gct")
    with torch.no_grad():  # make the GCTs act, so that losing one would change the output
        for m in model.modules():
            if isinstance(m, GCT):
                m.gamma.normal_()
                m.beta.normal_()
    gcts = [m for m in model.modules() if isinstance(m, GCT)]
    assert len(gcts) == 53
    x = torch.randn(2, 3, 32, 32)
    seen = []
    hooks = [g.register_forward_hook(lambda m, a, o: seen.append(m)) for g in gcts]
    report = convert_to_cgc(model)
    assert len(report) == 17  # the stem and the 16 3x3 convs
    assert sum(isinstance(m, GCT) for m in model.modules()) == 53
    assert isinstance(model.layer1[0].conv2, ContextGatedConv2d) and isinstance(model.layer1[0].conv2.context, GCT)
    model(x)
    assert len(seen) == 53 and set(map(id, seen)) == set(map(id, gcts))  # every GCT still runs, once
    for h in hooks:
        h.remove()
    gct = model.layer1[0].conv2.context
    got = {}
    model.layer1[0].conv2.register_forward_pre_hook(lambda m, a: got.update(conv_in=a[0]))
    gct.register_forward_hook(lambda m, a, o: got.update(gct_out=o))
    model(x)
    torch.testing.assert_close(got["conv_in"], got["gct_out"])  # the CGC conv sees GCT's output


def test_a_surgery_can_be_undone_and_says_what_it_skipped():
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(1, 3, 64, 64)
    before, names = model(x), set(model.state_dict())
    gct = insert_context(model, "gct")
    cgc = convert_to_cgc(model)
    again = insert_context(model, "gct")  # every conv has its GCT already: nothing changes, each is named
    assert len(again) == 0 and len(again.skipped) == len(gct) and "already has a context (GCT)" in str(again)
    cgc.undo()
    gct.undo()
    assert set(model.state_dict()) == names and torch.equal(model(x), before)
    assert not any(isinstance(m, ContextGatedConv2d) for m in model.modules())
