"""One transformer block, pre- or post-norm, with optional cross-attention (decoders)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

KeysValues = tuple[torch.Tensor, torch.Tensor]


class TransformerBlock(nn.Module):
    """Attention, optional cross-attention and feed-forward sub-layers, each with a residual
    and a norm.

    Post-norm (BERT, BART): ``x = norm(x + sublayer(x))``. Pre-norm (GPT-2, LLaMA, T5,
    PEGASUS): ``x = x + sublayer(norm(x))``. A decoder block attends to the encoder's output
    (``memory``) between its self-attention and its feed-forward.
    """

    def __init__(
        self,
        attention: nn.Module,
        feed_forward: nn.Module,
        attention_norm: nn.Module,
        ffn_norm: nn.Module,
        pre_norm: bool,
        dropout: float = 0.0,
        cross_attention: nn.Module | None = None,
        cross_norm: nn.Module | None = None,
    ):
        super().__init__()
        self.attention = attention
        # Registered before the feed-forward so the parameter order follows the computation.
        self.cross_attention = cross_attention
        self.cross_norm = cross_norm
        self.feed_forward = feed_forward
        self.attention_norm = attention_norm
        self.ffn_norm = ffn_norm
        self.pre_norm = pre_norm
        self.dropout = nn.Dropout(dropout)

    def _residual(self, x: torch.Tensor, norm: Any, sublayer: Any) -> torch.Tensor:
        if self.pre_norm:
            return x + self.dropout(sublayer(norm(x)))
        return norm(x + self.dropout(sublayer(x)))

    def _cross(
        self, x: torch.Tensor, memory_kv: KeysValues | None, memory_mask: torch.Tensor | None
    ) -> torch.Tensor:
        if self.cross_attention is None:
            return x
        if memory_kv is None:
            raise ValueError("a decoder block needs the encoder's output (memory)")
        cross: Any = self.cross_attention
        return self._residual(x, self.cross_norm, lambda y: cross.attend(y, memory_kv, memory_mask))

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
        is_causal: bool = False,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x ``[b, s, h]``; memory ``[b, t, h]`` and its mask (bool ``[b, 1, 1, t]``) for
        cross-attention."""
        x = self._residual(
            x, self.attention_norm, lambda y: self.attention(y, mask, rotary, is_causal)
        )
        if self.cross_attention is not None:
            cross: Any = self.cross_attention
            memory_kv = None if memory is None else cross.keys_values(memory)
            x = self._cross(x, memory_kv, memory_mask)
        return self._residual(x, self.ffn_norm, self.feed_forward)

    def forward_cached(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        rotary: tuple[torch.Tensor, torch.Tensor] | None,
        past: KeysValues | None,
        is_causal: bool = False,
        memory_kv: KeysValues | None = None,
        memory_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, KeysValues]:
        """Like ``forward`` for new tokens over cached keys/values; returns the new cache entry.

        ``memory_kv`` are the cross-attention keys/values of the encoder's output, computed once
        per generation (``cross_attention.keys_values``). Dropout is off: inference only.
        """
        attention: Any = self.attention  # typed nn.Module; a MultiHeadAttention in practice
        kv: KeysValues | None = None

        def attend(y: torch.Tensor) -> torch.Tensor:
            nonlocal kv
            out, kv = attention.forward_cached(y, mask, rotary, past, is_causal)
            return out

        x = self._residual(x, self.attention_norm, attend)
        x = self._cross(x, memory_kv, memory_mask)
        x = self._residual(x, self.ffn_norm, self.feed_forward)
        assert kv is not None
        return x, kv
