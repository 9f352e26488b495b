import importlib
import sys

import pytest
import torch
import torch.nn.functional as F
from fairseq.models import ARCH_MODEL_REGISTRY, MODEL_REGISTRY
from fairseq.models.lightconv import LightConvModel, lightconv_iwslt_de_en

from seqctx.mt import user_dir
from seqctx.mt.cgc_lightconv import ContextGatedLightweightConv1dTBC, masked_adaptive_pool
from seqctx.mt.models import LightConvCGCModel, lightconv_cgc_iwslt_de_en
from tests.mt.conftest import DummyTask, lightconv_args, make_dictionary


def test_registered_once_and_plugin_imports_twice():
    assert MODEL_REGISTRY["lightconv_cgc"] is LightConvCGCModel
    assert {"lightconv_cgc", "lightconv_cgc_iwslt_de_en"} <= set(ARCH_MODEL_REGISTRY)
    from fairseq.utils import import_user_module

    class Args:
        user_dir = str(user_dir())

    import_user_module(Args)  # fairseq imports the folder by its base name
    import_user_module(Args)
    sys.modules.pop("seqctx_fairseq_plugin", None)
    sys.path.insert(0, str(user_dir().parent))
    try:
        importlib.import_module("seqctx_fairseq_plugin")  # a fresh import must not re-register
    finally:
        sys.path.pop(0)
    assert user_dir().name == "seqctx_fairseq_plugin" and (user_dir() / "__init__.py").is_file()


def test_masked_pool_equals_adaptive_pool_of_each_sentence():
    x = torch.randn(3, 2, 20)
    mask = torch.zeros(3, 20, dtype=torch.bool)
    mask[1, :6] = True  # left padding: 14 valid steps
    mask[2, :15] = True  # 5 valid steps < 9 bins: zero-padded
    out = masked_adaptive_pool(x, mask, 9)
    torch.testing.assert_close(out[0], F.adaptive_avg_pool1d(x[0:1], 9)[0])
    torch.testing.assert_close(out[1], F.adaptive_avg_pool1d(x[1:2, :, 6:], 9)[0])
    torch.testing.assert_close(out[2], torch.cat([x[2, :, 15:], torch.zeros(2, 4)], 1))


def test_gate_shape_and_gated_kernel():
    conv = ContextGatedLightweightConv1dTBC(16, 5, padding_l=2, num_heads=4, weight_softmax=True)
    x = torch.randn(11, 3, 16)  # (T, B, C)
    gate = conv.gate(x)
    assert gate.shape == (3, 4, 5) and gate.min() > 0 and gate.max() < 1
    assert conv.context_encode.weight.shape == (3 * 5 // 2 + 1, 15)
    y = conv(x)
    # reference: per sentence and head, conv1d of each channel with softmax(W) * G
    w = F.softmax(conv.weight.view(4, 5), -1)[None] * gate  # (B, H, K)
    for b in range(3):
        xb = x[:, b].T[:, None]  # (C, 1, T)
        kernel = w[b].repeat_interleave(4, 0)[:, None]  # channel c in head c // 4
        ref = F.conv1d(xb.transpose(0, 1), kernel, padding=2, groups=16)[0].T
        torch.testing.assert_close(y[:, b], ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="incremental decoding is not supported"):
        conv(x, incremental_state={})


def test_padding_never_changes_a_sentence(tiny_args):
    d = make_dictionary(50)
    model = LightConvCGCModel.build_model(tiny_args, DummyTask(d, d)).eval()
    torch.manual_seed(0)
    short = torch.randint(4, 50, (1, 6))
    long = torch.randint(4, 50, (1, 13))
    pad = d.pad()
    batch = torch.cat([torch.cat([torch.full((1, 7), pad), short], 1), long])  # left-padded, as fairseq batches
    alone = model.encoder(short, torch.tensor([6]))["encoder_out"][0][:, 0]
    together = model.encoder(batch, torch.tensor([6, 13]))["encoder_out"][0][7:, 0]
    torch.testing.assert_close(alone, together, rtol=1e-5, atol=1e-5)
    right = torch.cat([torch.cat([short, torch.full((1, 7), pad)], 1), long])  # right padding too
    torch.testing.assert_close(alone, model.encoder(right, torch.tensor([6, 13]))["encoder_out"][0][:6, 0],
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    # and beam search's reordering keeps working
    out = model.encoder(batch, torch.tensor([6, 13]))
    re = model.encoder.reorder_encoder_out(out, torch.tensor([1, 1, 0]))
    assert re["encoder_out"][0].shape[1] == 3


@pytest.mark.parametrize(("normalize_before", "glu"), [(False, False), (True, True)])
def test_encoder_layer_is_fairseqs_with_the_mask_passed_to_the_convolution(tiny_args, normalize_before, glu):
    """With the gate fixed at 1 our layer's forward is fairseq's LightConvEncoderLayer's; the mask
    reaches the convolution as an argument (no attribute is set on it)."""
    from fairseq.models.lightconv import LightConvEncoderLayer

    from seqctx.mt.models import ContextGatedLightConvEncoderLayer

    tiny_args.encoder_normalize_before, tiny_args.encoder_glu = normalize_before, glu
    torch.manual_seed(0)
    layer = ContextGatedLightConvEncoderLayer(tiny_args, kernel_size=3).eval()
    x = torch.randn(9, 2, 16)  # (T, B, C)
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[0, :4] = True
    seen = []
    layer.conv.gate = lambda x, padding_mask=None: seen.append(padding_mask) or torch.ones(x.shape[1], 4, 3)
    ours = layer(x, mask)
    assert seen[0] is mask
    torch.testing.assert_close(ours, LightConvEncoderLayer.forward(layer, x, mask), rtol=0, atol=0)
    assert not hasattr(layer.conv, "padding_mask")


def test_the_convolution_takes_the_padding_mask_as_an_argument():
    conv = ContextGatedLightweightConv1dTBC(8, 3, padding_l=1, num_heads=2).eval()
    x = torch.randn(6, 1, 8)
    padded = torch.cat([x, torch.randn(4, 1, 8)])  # right padding with other values
    mask = torch.tensor([[False] * 6 + [True] * 4])
    torch.testing.assert_close(conv(padded, padding_mask=mask)[:5], conv(x)[:5], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(conv(padded)[:5], conv(x)[:5])  # without the mask the padding is context


def test_decoder_is_lightconvs_and_incremental_decoding_works(tiny_args):
    d = make_dictionary(40)
    model = LightConvCGCModel.build_model(tiny_args, DummyTask(d, d)).eval()
    src = torch.randint(4, 40, (2, 7))
    enc = model.encoder(src, torch.tensor([7, 7]))
    prev = torch.randint(4, 40, (2, 5))
    full, _ = model.decoder(prev, encoder_out=enc)
    state: dict = {}
    steps = [model.decoder(prev[:, : i + 1], encoder_out=enc, incremental_state=state)[0] for i in range(5)]
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-4, atol=1e-5)


def test_fairseq_finds_no_shared_parameters(tiny_args):
    from fairseq.trainer import _catalog_shared_params

    d = make_dictionary(40)
    model = LightConvCGCModel.build_model(tiny_args, DummyTask(d, d))
    assert _catalog_shared_params(model) == []  # no "detected shared parameter" lines in fairseq-train's log


def test_parameter_counts_on_the_iwslt14_dictionaries(capsys):
    de, en = make_dictionary(8848), make_dictionary(6632)  # fairseq's IWSLT'14 de-en dictionaries
    counts = {}
    for name, cls, arch in (("LightConv", LightConvModel, lightconv_iwslt_de_en),
                            ("CGC-LightConv", LightConvCGCModel, lightconv_cgc_iwslt_de_en)):  # fmt: skip
        args = lightconv_args(arch)
        model = cls.build_model(args, DummyTask(de, en))
        counts[name] = sum(p.numel() for p in model.parameters()) / 1e6
    extra = counts["CGC-LightConv"] - counts["LightConv"]
    with capsys.disabled():
        print(f"\nIWSLT'14 De-En params: LightConv {counts['LightConv']:.2f}M (paper 38.14M), "
              f"CGC-LightConv {counts['CGC-LightConv']:.2f}M (paper 38.15M), CGC adds {extra * 1e6:.0f}")  # fmt: skip
    assert abs(counts["LightConv"] - 38.14) < 0.3
    assert 0 < extra < 0.05  # tens of thousands at most: the paper reports +0.01M
