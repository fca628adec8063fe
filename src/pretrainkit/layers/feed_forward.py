"""Position-wise feed-forward networks: dense (BERT) and gated (SwiGLU / GeGLU)."""

from __future__ import annotations

import torch
from torch import nn

from pretrainkit.layers.norms import make_activation


class FeedForward(nn.Module):
    """``down(dropout(act(up(x))))``; the inner dropout is BART's ``activation_dropout``."""

    def __init__(
        self,
        hidden_size: int,
        ffn_size: int,
        activation: str = "gelu",
        bias: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.up = nn.Linear(hidden_size, ffn_size, bias=bias)
        self.act = make_activation(activation)
        self.dropout = nn.Dropout(dropout)
        self.down = nn.Linear(ffn_size, hidden_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.dropout(self.act(self.up(x))))


class GatedFeedForward(nn.Module):
    """``down(act(gate(x)) * up(x))``: SwiGLU with silu, GeGLU with gelu."""

    def __init__(
        self,
        hidden_size: int,
        ffn_size: int,
        activation: str = "silu",
        bias: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.gate = nn.Linear(hidden_size, ffn_size, bias=bias)
        self.up = nn.Linear(hidden_size, ffn_size, bias=bias)
        self.act = make_activation(activation)
        self.dropout = nn.Dropout(dropout)
        self.down = nn.Linear(ffn_size, hidden_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.dropout(self.act(self.gate(x)) * self.up(x)))
