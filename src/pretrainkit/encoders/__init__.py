"""Encoder slot: vectors → contextual vectors."""

from pretrainkit.encoders.gated_cnn import GatedCNNEncoder
from pretrainkit.encoders.rnn import RecurrentEncoder
from pretrainkit.encoders.transformer import ENCODERS, TransformerEncoder

__all__ = ["ENCODERS", "GatedCNNEncoder", "RecurrentEncoder", "TransformerEncoder"]
