"""One transformer block, pre- or post-norm."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class TransformerBlock(nn.Module):
    """Attention and feed-forward sub-layers, each with a residual and a norm.

    Post-norm (BERT): ``x = norm(x + sublayer(x))``. Pre-norm (GPT-2, LLaMA):
    ``x = x + sublayer(norm(x))``.
    """

    def __init__(
        self,
        attention: nn.Module,
        feed_forward: nn.Module,
        attention_norm: nn.Module,
        ffn_norm: nn.Module,
        pre_norm: bool,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.attention = attention
        self.feed_forward = feed_forward
        self.attention_norm = attention_norm
        self.ffn_norm = ffn_norm
        self.pre_norm = pre_norm
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.dropout(self.attention(self.attention_norm(x), mask, rotary, is_causal))
            return x + self.dropout(self.feed_forward(self.ffn_norm(x)))
        x = self.attention_norm(x + self.dropout(self.attention(x, mask, rotary, is_causal)))
        return self.ffn_norm(x + self.dropout(self.feed_forward(x)))

    def forward_cached(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        rotary: tuple[torch.Tensor, torch.Tensor] | None,
        past: tuple[torch.Tensor, torch.Tensor] | None,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Like ``forward`` for new tokens over cached keys/values; returns the new cache entry.

        Dropout is skipped: this path is for inference only.
        """
        attention: Any = self.attention  # typed nn.Module; a MultiHeadAttention in practice
        attend = attention.forward_cached
        if self.pre_norm:
            out, kv = attend(self.attention_norm(x), mask, rotary, past, is_causal)
            x = x + out
            return x + self.feed_forward(self.ffn_norm(x)), kv
        out, kv = attend(x, mask, rotary, past, is_causal)
        x = self.attention_norm(x + out)
        return self.ffn_norm(x + self.feed_forward(x)), kv
