"""Multi-head attention with grouped-query heads, through PyTorch's fused SDPA kernel."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from pretrainkit.layers.positions import apply_rotary


class MultiHeadAttention(nn.Module):
    """Self- or cross-attention; ``num_kv_heads < num_heads`` gives grouped-query attention.

    Args:
        hidden_size: model width.
        num_heads: query heads.
        num_kv_heads: key/value heads (divides num_heads); None = num_heads.
        bias: biases on the projections.
        dropout: attention-probability dropout while training.
        head_dim: width of one head; None = hidden_size / num_heads.
        scale: factor on query·key; None = 1/sqrt(head_dim).
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        num_kv_heads: int | None = None,
        bias: bool = True,
        dropout: float = 0.0,
        head_dim: int | None = None,
        scale: float | None = None,
    ):
        super().__init__()
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads or num_heads
        self.head_dim = head_dim or hidden_size // num_heads
        self.scale = scale
        inner = num_heads * self.head_dim
        kv_size = self.num_kv_heads * self.head_dim
        self.query = nn.Linear(hidden_size, inner, bias=bias)
        self.key = nn.Linear(hidden_size, kv_size, bias=bias)
        self.value = nn.Linear(hidden_size, kv_size, bias=bias)
        self.output = nn.Linear(inner, hidden_size, bias=bias)
        self.dropout = dropout
        # While set (``record_attention``), self-attention computes its probabilities
        # explicitly and appends them here: distillation compares them; SDPA never exposes them.
        self.recorder: list[torch.Tensor] | None = None

    def keys_values(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values ``[b, kv_heads, t, d]`` of ``context`` ``[b, t, h]``.

        Cross-attention computes them once from the encoder's output; generation caches them.
        """
        b, t, _ = context.shape
        k = self.key(context).view(b, t, -1, self.head_dim).transpose(1, 2)
        v = self.value(context).view(b, t, -1, self.head_dim).transpose(1, 2)
        return k, v

    def attend(
        self,
        x: torch.Tensor,
        keys_values: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Queries from ``x`` ``[b, s, h]`` over given keys/values (cross-attention)."""
        b, s, _ = x.shape
        q = self.query(x).view(b, s, -1, self.head_dim).transpose(1, 2)
        if mask is not None and mask.dtype != torch.bool:
            mask = mask.to(q.dtype)
        out = F.scaled_dot_product_attention(
            q,
            *keys_values,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            scale=self.scale,
            enable_gqa=self.num_kv_heads != self.num_heads,
        )
        return self.output(out.transpose(1, 2).reshape(b, s, -1))

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        """x ``[b, s, h]``; mask bool (True = attend) or additive, broadcastable to ``[b, h, s, s]``."""
        b, s, _ = x.shape
        # Heads counted from the projected width, not num_heads: under tensor parallelism a
        # process projects only its own heads (num_heads / N), and the module stays the same.
        q = self.query(x).view(b, s, -1, self.head_dim).transpose(1, 2)  # [b, h, s, d]
        k = self.key(x).view(b, s, -1, self.head_dim).transpose(1, 2)
        v = self.value(x).view(b, s, -1, self.head_dim).transpose(1, 2)
        if rotary is not None:
            q = apply_rotary(q, *rotary)
            k = apply_rotary(k, *rotary)
        if mask is not None and mask.dtype != torch.bool:
            mask = mask.to(q.dtype)  # SDPA wants an additive mask in the query's dtype
        if self.recorder is not None:
            out = self._explicit(q, k, v, mask, is_causal and mask is None)
            return self.output(out.transpose(1, 2).reshape(b, s, -1))
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal and mask is None,
            scale=self.scale,
            enable_gqa=self.num_kv_heads != self.num_heads,
        )
        return self.output(out.transpose(1, 2).reshape(b, s, -1))

    def _explicit(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: torch.Tensor | None,
        is_causal: bool,
    ) -> torch.Tensor:
        """SDPA's result computed step by step, recording the probabilities ``[b, h, s, t]``."""
        if self.num_kv_heads != self.num_heads:  # grouped-query: each kv head serves a group
            repeat = self.num_heads // self.num_kv_heads
            k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        scale = self.scale if self.scale is not None else 1.0 / math.sqrt(q.shape[-1])
        scores = (q @ k.transpose(-1, -2)).float() * scale  # [b, h, s, t]
        if is_causal:
            s, t = scores.shape[-2:]
            mask = torch.ones(s, t, dtype=torch.bool, device=q.device).tril()
        if mask is not None:
            if mask.dtype == torch.bool:
                scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
            else:
                scores = scores + mask.float()
        probabilities = scores.softmax(dim=-1)
        assert self.recorder is not None
        self.recorder.append(probabilities)
        dropped = F.dropout(probabilities, self.dropout, self.training)
        return dropped.to(v.dtype) @ v

    def forward_cached(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        rotary: tuple[torch.Tensor, torch.Tensor] | None,
        past: tuple[torch.Tensor, torch.Tensor] | None,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Attention of new tokens over cached keys/values plus their own (generation).

        Args:
            x: the new tokens ``[b, s, h]``.
            mask: bool (True = attend) or additive, broadcastable to ``[b, h, s, t + s]``.
            rotary: cos, sin ``[s, d]`` or per row ``[b, 1, s, d]`` at the tokens' positions.
            past: keys and values ``[b, kv_heads, t, d]`` of earlier tokens (rotated already).
            is_causal: let SDPA apply its own causal mask (only valid when ``past`` is empty).

        Returns:
            The output ``[b, s, h]`` and the keys/values ``[b, kv_heads, t + s, d]`` to cache.
        """
        b, s, _ = x.shape
        q = self.query(x).view(b, s, -1, self.head_dim).transpose(1, 2)
        k = self.key(x).view(b, s, -1, self.head_dim).transpose(1, 2)
        v = self.value(x).view(b, s, -1, self.head_dim).transpose(1, 2)
        if rotary is not None:
            q = apply_rotary(q, *rotary)
            k = apply_rotary(k, *rotary)
        if past is not None:
            # Stored with kv heads only: GQA's memory saving holds for the cache too.
            k = torch.cat((past[0], k), dim=2)
            v = torch.cat((past[1], v), dim=2)
        if mask is not None and mask.dtype != torch.bool:
            mask = mask.to(q.dtype)
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            is_causal=is_causal and mask is None,
            scale=self.scale,
            enable_gqa=self.num_kv_heads != self.num_heads,
        )
        return self.output(out.transpose(1, 2).reshape(b, s, -1)), (k, v)


def attention_pattern(
    length: int,
    causal: bool,
    example_ids: torch.Tensor | None = None,
    prefix_lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Which keys each query may see, per row: bool ``[b or 1, 1, s, s]``, True = attend.

    Args:
        length: the sequence length ``s``.
        causal: the stack's own rule when no ``prefix_lengths`` is given.
        example_ids: ``[b, s]``, the packed example each token belongs to; tokens see only
            tokens of their own example (block-diagonal), so examples packed into one row do
            not see each other.
        prefix_lengths: ``[b]``; the first ``prefix_lengths[r]`` tokens of row r see each other
            in both directions and every later token sees what comes before it (UniLM's prefix
            LM). It sets the pattern whatever ``causal`` is (0 = causal even in an encoder), so a
            prefix-LM batch means the same for an encoder and a decoder-only model.
    """
    device = next((t.device for t in (example_ids, prefix_lengths) if t is not None), None)
    query = torch.arange(length, device=device)[:, None]  # [s, 1]
    key = torch.arange(length, device=device)[None, :]  # [1, s]
    if prefix_lengths is not None:
        in_prefix = key[None] < prefix_lengths.reshape(-1, 1, 1)  # [b, 1, s]
        keep = (key <= query)[None] | in_prefix  # [b, s, s]
    elif causal:
        keep = (key <= query)[None]  # [1, s, s]
    else:
        keep = torch.ones(1, length, length, dtype=torch.bool, device=device)
    if example_ids is not None:
        keep = keep & (example_ids[:, :, None] == example_ids[:, None, :])  # [b, s, s]
    return keep[:, None]


@contextlib.contextmanager
def record_attention(stack: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Within the block, the self-attention layers of ``stack`` append their probabilities
    ``[b, heads, s, s]`` (float32, in application order) to the list yielded.

    The probabilities are computed explicitly rather than by the fused kernel (slower, and
    differentiable: distillation trains a student's attention toward a teacher's).
    Cross-attention is not recorded.
    """
    recorded: list[torch.Tensor] = []
    modules = [
        m
        for name, m in stack.named_modules()
        if isinstance(m, MultiHeadAttention) and not name.endswith("cross_attention")
    ]
    for module in modules:
        module.recorder = recorded
    try:
        yield recorded
    finally:
        for module in modules:
            module.recorder = None
