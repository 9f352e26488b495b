"""``lightconv_cgc``: LightConv (Wu et al., ICLR 2019) whose encoder layers use the context-gated
lightweight convolution (CGC paper, sec. 3.4); the decoder is fairseq's LightConv decoder,
incremental decoding included. Importing this module registers the model and its architectures
with fairseq (once per process); it changes nothing in torch (see :mod:`seqctx.mt.safe_load`).
"""

from __future__ import annotations

import argparse

import torch.nn.functional as F
from fairseq.models import register_model, register_model_architecture
from fairseq.models.lightconv import (
    LightConvEncoderLayer,
    LightConvModel,
    base_architecture,
    lightconv_iwslt_de_en,
)
from torch import Tensor, nn

from .cgc_lightconv import ContextGatedLightweightConv1dTBC


class ContextGatedLightConvEncoderLayer(LightConvEncoderLayer):
    """fairseq's encoder layer with :class:`ContextGatedLightweightConv1dTBC` as its convolution.

    Its forward is fairseq's (the same sublayers, dropout and pre/post norms, in the same order)
    with one difference: the convolution receives the padding mask as an argument, so that padding
    stays out of its context."""

    def __init__(self, args, kernel_size: int = 0) -> None:
        super().__init__(args, kernel_size)
        if args.encoder_conv_type != "lightweight":
            raise ValueError(
                f"lightconv_cgc gates lightweight convolutions; got --encoder-conv-type {args.encoder_conv_type!r}"
            )
        self.conv = ContextGatedLightweightConv1dTBC(
            self.conv_dim,
            kernel_size,
            padding_l=self.conv.padding_l,
            weight_softmax=args.weight_softmax,
            num_heads=args.encoder_attention_heads,
            weight_dropout=args.weight_dropout,
        )

    def forward(self, x: Tensor, encoder_padding_mask: Tensor | None = None) -> Tensor:
        """``x (T, B, C)``, ``encoder_padding_mask (B, T)`` (True at padding) -> ``(T, B, C)``:
        ``x + Drop(W2 conv(GLU(W1 LN(x))))``, then ``x + FFN(LN(x))`` (norms before or after, as
        ``--encoder-normalize-before`` says)."""
        residual = x
        x = self._norm(self.layer_norm1, x, before=True)
        x = self.linear1(self.input_dropout_module(x))
        if self.act is not None:
            x = self.act(x)  # GLU
        if encoder_padding_mask is not None:
            x = x.masked_fill(encoder_padding_mask.transpose(0, 1).unsqueeze(2), 0)
        x = self.conv(x, padding_mask=encoder_padding_mask)
        x = residual + self.dropout_module(self.linear2(x))
        x = self._norm(self.layer_norm1, x, before=False)
        residual = x
        x = self._norm(self.layer_norm2, x, before=True)
        x = self.fc2(self.relu_dropout_module(F.relu(self.fc1(x))))
        x = residual + self.dropout_module(x)
        return self._norm(self.layer_norm2, x, before=False)

    def _norm(self, norm: nn.Module, x: Tensor, before: bool) -> Tensor:
        """``norm(x)`` where this layer normalises (before or after its sublayers), else ``x``."""
        return norm(x) if self.maybe_layer_norm(before=before, after=not before) else x


@register_model("lightconv_cgc")
class LightConvCGCModel(LightConvModel):
    """LightConv with a context-gated encoder (``--arch lightconv_cgc_iwslt_de_en``)."""

    @staticmethod
    def add_args(parser) -> None:
        """LightConv's options, but ``--encoder/decoder-conv-type`` get no parser default (fairseq
        gives them "dynamic"), so that the architectures can tell a user's value from none."""
        LightConvModel.add_args(parser)
        for action in parser._actions:  # argparse has no public way to drop one option's default
            if action.dest in ("encoder_conv_type", "decoder_conv_type"):
                action.default = argparse.SUPPRESS

    @classmethod
    def build_model(cls, args, task):
        model = super().build_model(args, task)
        kernels = args.encoder_kernel_size_list
        model.encoder.layers = nn.ModuleList(
            ContextGatedLightConvEncoderLayer(args, kernel_size=kernels[i]) for i in range(args.encoder_layers)
        )
        return cls(model.encoder, model.decoder)


@register_model_architecture("lightconv_cgc", "lightconv_cgc")
def lightconv_cgc(args) -> None:
    """LightConv's base architecture; the encoder's convolutions default to lightweight (the gated
    kind; another value is rejected when the model is built), the decoder's to fairseq's dynamic."""
    args.encoder_conv_type = getattr(args, "encoder_conv_type", "lightweight")
    args.decoder_conv_type = getattr(args, "decoder_conv_type", "dynamic")
    base_architecture(args)


@register_model_architecture("lightconv_cgc", "lightconv_cgc_iwslt_de_en")
def lightconv_cgc_iwslt_de_en(args) -> None:
    """``lightconv_iwslt_de_en``'s settings: 512/1024, 4 heads, 7 encoder and 6 decoder layers,
    kernels ``[3, 7, 15, 31, 31, 31, 31]``, lightweight convolutions in both (fairseq's
    ``--encoder/decoder-conv-type`` default to dynamic), GLU off; a user's values are kept."""
    args.encoder_conv_type = getattr(args, "encoder_conv_type", "lightweight")
    args.decoder_conv_type = getattr(args, "decoder_conv_type", "lightweight")
    lightconv_iwslt_de_en(args)
