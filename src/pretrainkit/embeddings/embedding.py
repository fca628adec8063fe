"""Embedding parts (word, positions, segment) summed into one embedding module."""

from __future__ import annotations

import math

import torch
from torch import nn

from pretrainkit.layers.norms import make_norm
from pretrainkit.registry import Registry

EMBEDDING_PARTS: Registry[type[nn.Module]] = Registry("embedding part")


@EMBEDDING_PARTS.register("word")
class WordEmbedding(nn.Module):
    def __init__(self, vocab_size: int, size: int, **_: object):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(vocab_size, size))

    def forward(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        return nn.functional.embedding(input_ids, self.weight)


@EMBEDDING_PARTS.register("position")
class LearnedPositionEmbedding(nn.Module):
    def __init__(self, max_positions: int, size: int, **_: object):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(max_positions, size))

    def forward(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        if positions.numel() and int(positions.max()) >= self.weight.shape[0]:
            raise ValueError(
                f"sequence of length {positions.shape[-1]} exceeds max_positions "
                f"{self.weight.shape[0]} of the position embedding"
            )
        out = nn.functional.embedding(positions, self.weight)
        # Shared positions [s] broadcast over the batch; per-row positions [b, s] already have it.
        return out[None] if positions.dim() == 1 else out


@EMBEDDING_PARTS.register("sinusoidal")
class SinusoidalPositionEmbedding(nn.Module):
    """Fixed sine/cosine positions (Transformer, 2017); nothing to learn or save."""

    table: torch.Tensor

    def __init__(self, max_positions: int, size: int, **_: object):
        super().__init__()
        position = torch.arange(max_positions, dtype=torch.float32)[:, None]
        div = torch.exp(torch.arange(0, size, 2, dtype=torch.float32) * (-math.log(10000.0) / size))
        table = torch.zeros(max_positions, size)
        table[:, 0::2] = torch.sin(position * div)
        table[:, 1::2] = torch.cos(position * div)[:, : size // 2]
        self.register_buffer("table", table, persistent=False)

    def forward(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        out = self.table[positions]
        return out[None] if positions.dim() == 1 else out


@EMBEDDING_PARTS.register("segment")
class SegmentEmbedding(nn.Module):
    def __init__(self, num_segments: int, size: int, **_: object):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_segments, size))

    def forward(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        return nn.functional.embedding(token_type_ids, self.weight)


class Embedding(nn.Module):
    """Sum of parts → optional norm → dropout → optional projection up to the hidden size.

    Args:
        parts: named part modules, summed in order; ``word`` must be among them.
        norm: applied to the sum (None = no norm).
        dropout: dropout probability after the norm.
        project: ALBERT's factorised embedding, a linear from the part size to hidden.
    """

    def __init__(
        self,
        parts: dict[str, nn.Module],
        norm: nn.Module | None,
        dropout: float,
        project: nn.Module | None = None,
        position_offset: int = 0,
    ):
        super().__init__()
        if "word" not in parts:
            raise ValueError("the embedding needs a 'word' part")
        self.parts = nn.ModuleDict(parts)
        self.norm = norm
        self.dropout = nn.Dropout(dropout)
        self.project = project
        self.position_offset = position_offset

    @property
    def word_weight(self) -> nn.Parameter:
        weight = self.parts["word"].weight
        assert isinstance(weight, nn.Parameter)
        return weight

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Embed ``input_ids`` ``[b, s]`` into ``[b, s, h]``.

        Args:
            input_ids: token ids ``[b, s]``.
            token_type_ids: segment ids ``[b, s]``; None = all zeros.
            positions: 0-based positions ``[s]`` or per row ``[b, s]`` (cached generation and
                left-padded prompts); None = ``0 .. s-1``. ``position_offset`` is added either way.
        """
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if positions is None:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        if self.position_offset:
            positions = positions + self.position_offset
        x = None
        for part in self.parts.values():
            y = part(input_ids, token_type_ids, positions)
            x = y if x is None else x + y
        assert x is not None
        if self.norm is not None:
            x = self.norm(x)
        x = self.dropout(x)
        if self.project is not None:
            x = self.project(x)
        return x  # [b, s, h]


def build_embedding(
    vocab_size: int,
    hidden_size: int,
    parts: list[str],
    max_positions: int,
    num_segments: int,
    factorized_size: int | None,
    layer_norm: bool,
    norm: str,
    norm_eps: float,
    dropout: float,
    position_offset: int = 0,
) -> Embedding:
    size = factorized_size or hidden_size
    modules = {
        name: EMBEDDING_PARTS.get(name)(
            vocab_size=vocab_size, max_positions=max_positions, num_segments=num_segments, size=size
        )
        for name in parts
    }
    project = nn.Linear(size, hidden_size) if factorized_size else None
    return Embedding(
        modules,
        make_norm(norm, size, norm_eps) if layer_norm else None,
        dropout,
        project,
        position_offset,
    )
