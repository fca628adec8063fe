"""Recurrent encoders: stacks of LSTM or GRU layers over packed sequences, uni- or bidirectional."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from pretrainkit.encoders.transformer import ENCODERS
from pretrainkit.errors import ConfigError

RNN_CELLS: dict[str, type[nn.LSTM] | type[nn.GRU]] = {"lstm": nn.LSTM, "gru": nn.GRU}


def right_padded_lengths(attention_mask: torch.Tensor | None, length: int) -> torch.Tensor | None:
    """Real tokens per row ``[b]`` of a right-padded mask ``[b, s]``; None when nothing is padded.

    Raises:
        ValueError: the mask is not a prefix of ones per row (left padding, holes).
    """
    if attention_mask is None:
        return None
    keep = attention_mask.bool()  # [b, s]
    lengths = keep.sum(dim=1)  # [b]
    prefix = torch.arange(length, device=keep.device)[None, :] < lengths[:, None]  # [b, s]
    if not torch.equal(keep, prefix):
        raise ValueError(
            "recurrent encoders read right-padded batches only: every attention_mask row must "
            "be ones then zeros (left padding or holes in the mask cannot be packed exactly)"
        )
    if bool((lengths == length).all()):
        return None
    return lengths


class RecurrentEncoder(nn.Module):
    """Layers of ``nn.LSTM`` / ``nn.GRU`` applied in order, each over the packed batch.

    Packing (``pack_padded_sequence`` with the mask's lengths) means a row's outputs at its real
    positions do not depend on how much padding follows, in either direction; outputs at padding
    positions are zero.

    Args:
        layers: single-layer recurrent modules, ``batch_first``; each maps the width of the one
            before it (the first, the embedding's) to ``hidden_size``.
        dropout: between layers (not after the last), as ``nn.LSTM``'s own ``dropout``.
    """

    def __init__(self, layers: Sequence[nn.LSTM | nn.GRU], dropout: float):
        super().__init__()
        # Not called `layers`: SAMP and the distributed engines read `encoder.layers` as the
        # blocks of a transformer stack.
        self.recurrent = nn.ModuleList(layers)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x ``[b, s, h]`` → ``[b, s, h]``; attention_mask ``[b, s]``, 1 for real tokens, right
        padding only."""
        return self._run(x, attention_mask, keep_all=False)[-1]

    def layer_outputs(
        self, x: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """Every layer's output ``[b, s, h]`` in order; the last is what ``forward`` returns."""
        return self._run(x, attention_mask, keep_all=True)

    def _run(
        self, x: torch.Tensor, attention_mask: torch.Tensor | None, keep_all: bool
    ) -> list[torch.Tensor]:
        length = x.shape[1]
        lengths = right_padded_lengths(attention_mask, length)
        outputs = []
        for i, layer in enumerate(self.recurrent):
            if i > 0:
                x = self.dropout(x)
            x = self._layer(layer, x, lengths, length)
            if keep_all or i == len(self.recurrent) - 1:
                outputs.append(x)
        return outputs

    @staticmethod
    def _layer(
        layer: nn.Module, x: torch.Tensor, lengths: torch.Tensor | None, length: int
    ) -> torch.Tensor:
        if lengths is None:  # nothing padded: the plain (faster) path computes the same
            return layer(x)[0]
        # An all-padding row would be a length-0 sequence, which packing refuses: run it over
        # one slot and zero that slot afterwards (it is padding).
        packed = pack_padded_sequence(
            x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
        )
        out, _ = pad_packed_sequence(layer(packed)[0], batch_first=True, total_length=length)
        if bool((lengths == 0).any()):
            out = out * (lengths > 0)[:, None, None].to(out.dtype)
        return out  # [b, s, h], zeros at padding positions


def build_recurrent_encoder(
    cell: str, hidden_size: int, num_layers: int, bidirectional: bool, dropout: float
) -> RecurrentEncoder:
    """Stack ``num_layers`` single-layer ``cell`` modules whose outputs are ``hidden_size`` wide.

    Bidirectional layers run ``hidden_size / 2`` units per direction and concatenate them.
    """
    if bidirectional and hidden_size % 2:
        raise ConfigError(
            f"hidden_size ({hidden_size}) must be even for a bidirectional {cell}: each "
            "direction has hidden_size / 2 units"
        )
    units = hidden_size // 2 if bidirectional else hidden_size
    module = RNN_CELLS[cell]
    layers = [
        module(hidden_size, units, batch_first=True, bidirectional=bidirectional)
        for _ in range(num_layers)
    ]
    return RecurrentEncoder(layers, dropout)


@ENCODERS.register("lstm")
def build_lstm_encoder(
    hidden_size: int, num_layers: int, bidirectional: bool, dropout: float
) -> RecurrentEncoder:
    """An LSTM stack (options: ``RNNEncoderConfig``)."""
    return build_recurrent_encoder("lstm", hidden_size, num_layers, bidirectional, dropout)


@ENCODERS.register("gru")
def build_gru_encoder(
    hidden_size: int, num_layers: int, bidirectional: bool, dropout: float
) -> RecurrentEncoder:
    """A GRU stack (options: ``RNNEncoderConfig``)."""
    return build_recurrent_encoder("gru", hidden_size, num_layers, bidirectional, dropout)
