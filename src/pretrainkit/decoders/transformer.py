"""The transformer decoder: the encoder's stack with causal self-attention and cross-attention.

One stack class serves both slots (``encoders.transformer.TransformerEncoder``); a decoder is
that stack built with a cross-attention sub-layer in every block, so masks, positions, the KV
cache and every option behave the same on both sides.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from pretrainkit.encoders.transformer import build_transformer_encoder
from pretrainkit.registry import Registry

DECODERS: Registry[Callable[..., nn.Module]] = Registry("decoder")


@DECODERS.register("transformer")
def build_transformer_decoder(**options: Any) -> nn.Module:
    """A transformer stack whose blocks also attend to the encoder's output.

    Takes the encoder builder's keyword arguments (``causal`` is always true for decoders,
    checked by ``DecoderConfig``).
    """
    return build_transformer_encoder(**options, cross_attention=True)
