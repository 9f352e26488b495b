import argparse

import pytest
from fairseq.data import Dictionary


def make_dictionary(size: int) -> Dictionary:
    d = Dictionary()
    for i in range(size - len(d)):
        d.add_symbol(f"w{i}")
    return d


class DummyTask:
    def __init__(self, src: Dictionary, tgt: Dictionary) -> None:
        self.source_dictionary, self.target_dictionary = src, tgt


def lightconv_args(arch_fn, **overrides) -> argparse.Namespace:
    """The Namespace fairseq would build for ``--arch``: add_args defaults, then the arch."""
    args = argparse.Namespace(
        encoder_conv_type="lightweight", decoder_conv_type="lightweight", weight_softmax=True,
        max_source_positions=1024, max_target_positions=1024, **overrides,
    )  # fmt: skip
    arch_fn(args)
    return args


@pytest.fixture
def tiny_args():
    from seqctx.mt.models import lightconv_cgc

    return lightconv_args(
        lightconv_cgc, encoder_layers=2, decoder_layers=2, encoder_embed_dim=16, decoder_embed_dim=16,
        encoder_ffn_embed_dim=32, decoder_ffn_embed_dim=32, encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_kernel_size_list=[3, 7], decoder_kernel_size_list=[3, 7], encoder_glu=False, decoder_glu=False,
        dropout=0.0, weight_dropout=0.0,
    )  # fmt: skip
