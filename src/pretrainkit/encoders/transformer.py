"""The transformer encoder: a stack of blocks with the position scheme applied in attention."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from pretrainkit.layers.attention import MultiHeadAttention, attention_pattern
from pretrainkit.layers.block import TransformerBlock
from pretrainkit.layers.feed_forward import FeedForward, GatedFeedForward
from pretrainkit.layers.norms import make_norm
from pretrainkit.layers.positions import (
    RelativePositionBias,
    RotaryEmbedding,
    alibi_bias,
    alibi_slopes,
)
from pretrainkit.registry import Registry

ENCODERS: Registry[Callable[..., nn.Module]] = Registry("encoder")


@dataclass
class KVCache:
    """Keys and values of earlier tokens, one entry per layer application, for generation.

    Attributes:
        layers: per layer application, keys and values ``[b, kv_heads, t, d]`` (kv heads, not
            repeated for grouped-query attention; rotary already applied), or None before the
            first call.
        keep: ``[b, t]`` bool, False for padding slots (left-padded prompts); None when empty.
    """

    layers: list[tuple[torch.Tensor, torch.Tensor] | None] = field(default_factory=list)
    keep: torch.Tensor | None = None
    # Decoders: per layer, cross-attention keys/values of the encoder's output (computed once),
    # and the encoder-side mask ([b, 1, 1, t] bool, None = no padding).
    memory: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    memory_mask: torch.Tensor | None = None

    @property
    def length(self) -> int:
        """Number of cached token slots ``t`` (padding included)."""
        return 0 if self.keep is None else self.keep.shape[1]

    def reorder(self, index: torch.Tensor) -> None:
        """Select batch rows ``index`` in place (beam search keeps the surviving beams)."""
        self.layers = [
            None if kv is None else (kv[0].index_select(0, index), kv[1].index_select(0, index))
            for kv in self.layers
        ]
        if self.keep is not None:
            self.keep = self.keep.index_select(0, index)
        if self.memory is not None:
            self.memory = [
                (k.index_select(0, index), v.index_select(0, index)) for k, v in self.memory
            ]
        if self.memory_mask is not None:
            self.memory_mask = self.memory_mask.index_select(0, index)


def memory_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """Cross-attention mask ``[b, 1, 1, t]`` (True = attend) from ``[b, t]``; None = no padding."""
    if mask is None or bool(mask.all()):
        return None
    return mask[:, None, None, :].bool()


class TransformerEncoder(nn.Module):
    """Blocks applied in order; with fewer blocks than ``num_layers`` each block is applied
    ``num_layers / len(layers)`` times in a row (``share_layers``: one block; ``layer_groups``).

    The same stack is the decoder slot when its blocks have cross-attention: then ``memory``
    (the encoder's output) is required.

    Args:
        layers: the distinct blocks (a single one when shared); their number divides
            ``num_layers``.
        num_layers: how many times blocks are applied.
        num_heads: attention heads (for ALiBi / relative bias shapes).
        position: "absolute" (done by the embedding), "rotary", "alibi", "relative" or "none".
        causal: mask future positions (decoder-only LMs).
        final_norm: norm after the last block (pre-norm stacks).
        rotary: the rotary module when position == "rotary".
        relative_bias: the T5 bias module when position == "relative".
    """

    def __init__(
        self,
        layers: Sequence[nn.Module],
        num_layers: int,
        num_heads: int,
        position: str,
        causal: bool,
        final_norm: nn.Module | None,
        rotary: RotaryEmbedding | None = None,
        relative_bias: RelativePositionBias | None = None,
    ):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.position = position
        self.causal = causal
        self.final_norm = final_norm
        self.rotary = rotary
        self.relative_bias = relative_bias

    def _mask(
        self,
        attention_mask: torch.Tensor | None,
        length: int,
        device: torch.device,
        example_ids: torch.Tensor | None = None,
        prefix_lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, bool]:
        """The attention mask for SDPA and whether SDPA may use its own causal path."""
        bias = None
        if self.position == "alibi":
            bias = alibi_bias(self.num_heads, length, device)
        elif self.position == "relative" and self.relative_bias is not None:
            bias = self.relative_bias(length, length)
        patterned = example_ids is not None or prefix_lengths is not None
        plain = bias is None and not patterned
        if plain and (attention_mask is None or bool(attention_mask.all())):
            # No padding and no bias: the kernel's fast paths (and its own causal mask) apply.
            return None, self.causal
        keep = torch.ones(1, 1, 1, length, dtype=torch.bool, device=device)
        if attention_mask is not None:
            keep = attention_mask[:, None, None, :].bool()  # [b, 1, 1, s]
        if patterned:
            keep = keep & attention_pattern(length, self.causal, example_ids, prefix_lengths)
            # A padding query would see no key at all, and SDPA's NaN for it would reach the
            # real tokens through its value; seeing itself keeps it finite (and changes nothing
            # for a real token, which always sees itself).
            keep = keep | torch.eye(length, dtype=torch.bool, device=device)
        elif self.causal:
            keep = keep & torch.ones(length, length, dtype=torch.bool, device=device).tril()
        if bias is None:
            return keep, False
        neg = torch.finfo(torch.float32).min
        return bias.float().masked_fill(~keep, neg), False

    def _cached_mask(
        self, keep_keys: torch.Tensor, past: int, length: int
    ) -> tuple[torch.Tensor | None, bool]:
        """Mask of ``length`` new queries over ``past`` cached + new keys, and SDPA's causal flag."""
        device = keep_keys.device
        total = past + length
        positional = self.position in ("alibi", "relative")
        if not positional and bool(keep_keys.all()):
            if length == 1 or not self.causal:
                return None, False  # one new token sees every cached one
            if past == 0:
                return None, True  # a fresh prompt: same fast path as training's forward
        query_slot = torch.arange(past, total, device=device)[:, None]  # [s, 1]
        key_slot = torch.arange(total, device=device)[None, :]  # [1, t + s]
        keep = keep_keys[:, None, None, :].bool()  # [b, 1, 1, t + s]
        if self.causal:
            keep = keep & (key_slot <= query_slot)
        # A padding query would see no key at all and SDPA would return NaN for it, which then
        # poisons later layers through its value; letting it see itself keeps everything finite.
        keep = keep | (key_slot == query_slot)
        bias = None
        if self.position == "alibi":
            # Slot distance equals position distance between real tokens, padding or not.
            distance = (key_slot - query_slot).abs().float()
            bias = -(alibi_slopes(self.num_heads).to(device)[:, None, None] * distance)[None]
        elif self.position == "relative" and self.relative_bias is not None:
            buckets = self.relative_bias.bucket(key_slot - query_slot)
            bias = self.relative_bias.bias(buckets).permute(2, 0, 1)[None]
        if bias is None:
            return keep, False
        return bias.float().masked_fill(~keep, torch.finfo(torch.float32).min), False

    def forward_cached(
        self,
        x: torch.Tensor,
        cache: KVCache,
        positions: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        memory_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run new tokens over the cached ones and append their keys/values to ``cache``.

        The inference path of generation (no dropout). With an empty cache and the whole
        sequence it computes what ``forward`` computes.

        Args:
            x: embedded new tokens ``[b, s, h]``.
            cache: updated in place.
            positions: the new tokens' 0-based positions, ``[s]`` or per row ``[b, s]`` (rows of
                left-padded prompts start at different slots); used by rotary.
            attention_mask: ``[b, s]``, 1 for real tokens, 0 for padding; None = all real.
            memory: decoders: the encoder's output ``[b, t, h]``, needed on the first call
                only (its cross-attention keys/values are cached).
            memory_attention_mask: ``[b, t]`` padding mask of ``memory``.

        Returns:
            ``[b, s, h]`` after the final norm.
        """
        b, length, _ = x.shape
        past = cache.length
        new_keep = (
            torch.ones(b, length, dtype=torch.bool, device=x.device)
            if attention_mask is None
            else attention_mask.bool()
        )
        keep_keys = new_keep if cache.keep is None else torch.cat((cache.keep, new_keep), dim=1)
        mask, is_causal = self._cached_mask(keep_keys, past, length)
        rotary = None
        if self.rotary is not None:
            cos, sin = self.rotary(positions.reshape(-1))
            if positions.dim() == 2:  # per row: [b, 1, s, d] broadcasts over heads
                cos, sin = cos.view(b, 1, length, -1), sin.view(b, 1, length, -1)
            rotary = (cos, sin)
        if not cache.layers:
            cache.layers = [None] * self.num_layers
        if cache.memory is None and memory is not None:
            cache.memory = [
                self._layer(i).cross_attention.keys_values(memory) for i in range(self.num_layers)
            ]
            cache.memory_mask = memory_mask(memory_attention_mask)
        for i in range(self.num_layers):
            memory_kv = None if cache.memory is None else cache.memory[i]
            x, cache.layers[i] = self._layer(i).forward_cached(
                x, mask, rotary, cache.layers[i], is_causal, memory_kv, cache.memory_mask
            )
        cache.keep = keep_keys
        if self.final_norm is not None:
            x = self.final_norm(x)
        return x

    def _layer(self, i: int) -> Any:
        # Consecutive applications share a block: with 2 blocks over 6 layers, 0 0 0 1 1 1.
        return self.layers[i * len(self.layers) // self.num_layers]

    def forward(
        self,
        x: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        memory_attention_mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        example_ids: torch.Tensor | None = None,
        prefix_lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x ``[b, s, h]`` → ``[b, s, h]``; attention_mask ``[b, s]`` with 1 for real tokens.

        Decoders also take the encoder's output ``memory`` ``[b, t, h]`` and its mask ``[b, t]``.
        ``positions`` ``[b, s]`` are per-row token positions for rotary (packed examples restart
        at 0); ``example_ids`` and ``prefix_lengths`` give a per-row attention pattern (see
        ``attention_pattern``).
        """
        pattern = (positions, example_ids, prefix_lengths)
        return self._run(
            x, attention_mask, memory, memory_attention_mask, keep_all=False, pattern=pattern
        )[-1]

    def layer_outputs(
        self,
        x: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        memory_attention_mask: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """The output of every layer application ``[b, s, h]``, in order.

        The last entry is what ``forward`` returns (after the final norm, where there is one);
        with shared layers every application counts as a layer.
        """
        return self._run(x, attention_mask, memory, memory_attention_mask, keep_all=True)

    def _run(
        self,
        x: torch.Tensor,
        attention_mask: torch.Tensor | None,
        memory: torch.Tensor | None,
        memory_attention_mask: torch.Tensor | None,
        keep_all: bool,
        pattern: tuple[torch.Tensor | None, ...] = (None, None, None),
    ) -> list[torch.Tensor]:
        b, length, _ = x.shape
        positions, example_ids, prefix_lengths = pattern
        mask, is_causal = self._mask(attention_mask, length, x.device, example_ids, prefix_lengths)
        cross_mask = memory_mask(memory_attention_mask)
        rotary = None
        if self.rotary is not None and positions is not None:
            cos, sin = self.rotary(positions.reshape(-1))
            if positions.dim() == 2:  # per row: [b, 1, s, d] broadcasts over heads
                cos, sin = cos.view(b, 1, length, -1), sin.view(b, 1, length, -1)
            rotary = (cos, sin)
        elif self.rotary is not None:
            rotary = self.rotary(torch.arange(length, device=x.device))
        outputs = []
        for i in range(self.num_layers):
            x = self._layer(i)(x, mask, rotary, is_causal, memory, cross_mask)
            if keep_all:
                outputs.append(x)
        if self.final_norm is not None:
            x = self.final_norm(x)
        if keep_all:
            outputs[-1] = x
        else:
            outputs.append(x)
        return outputs


@ENCODERS.register("transformer")
def build_transformer_encoder(
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int | None,
    head_dim: int | None,
    attention_scale: float | None,
    ffn_size: int,
    ffn: str,
    activation: str,
    norm: str,
    norm_position: str,
    norm_eps: float,
    position: str,
    rotary_base: float,
    relative_buckets: int,
    relative_max_distance: int,
    causal: bool,
    share_layers: bool,
    bias: bool,
    dropout: float,
    attention_dropout: float,
    ffn_dropout: float,
    final_norm: bool | None,
    cross_attention: bool = False,
    layer_groups: int | None = None,
) -> TransformerEncoder:
    """Wire blocks from typed sizes; the only place a stack's options are interpreted.

    ``cross_attention`` makes it a decoder stack (registered in the decoder slot).
    """

    def attention() -> MultiHeadAttention:
        return MultiHeadAttention(
            hidden_size, num_heads, num_kv_heads, bias, attention_dropout, head_dim, attention_scale
        )

    def block() -> TransformerBlock:
        if ffn == "gated":
            feed_forward: nn.Module = GatedFeedForward(
                hidden_size, ffn_size, activation, bias, ffn_dropout
            )
        else:
            feed_forward = FeedForward(hidden_size, ffn_size, activation, bias, ffn_dropout)
        return TransformerBlock(
            attention(),
            feed_forward,
            make_norm(norm, hidden_size, norm_eps),
            make_norm(norm, hidden_size, norm_eps),
            norm_position == "pre",
            dropout,
            attention() if cross_attention else None,
            make_norm(norm, hidden_size, norm_eps) if cross_attention else None,
        )

    distinct = 1 if share_layers else layer_groups or num_layers
    layers = [block() for _ in range(distinct)]
    rotary = (
        RotaryEmbedding(head_dim or hidden_size // num_heads, rotary_base)
        if position == "rotary"
        else None
    )
    relative = None
    if position == "relative":
        relative = RelativePositionBias(
            num_heads, relative_buckets, relative_max_distance, bidirectional=not causal
        )
    return TransformerEncoder(
        layers,
        num_layers,
        num_heads,
        position,
        causal,
        make_norm(norm, hidden_size, norm_eps) if final_norm else None,
        rotary,
        relative,
    )
