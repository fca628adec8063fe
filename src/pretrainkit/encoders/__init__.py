"""Encoder slot: vectors → contextual vectors."""

from pretrainkit.encoders.transformer import ENCODERS, TransformerEncoder

__all__ = ["ENCODERS", "TransformerEncoder"]
