"""Decoder slot (sequence-to-sequence models): target vectors + encoder output → vectors."""

from pretrainkit.decoders.transformer import DECODERS

__all__ = ["DECODERS"]
