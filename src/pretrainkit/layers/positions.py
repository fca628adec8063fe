"""Position schemes that act inside attention: rotary, ALiBi and T5 relative bias."""

from __future__ import annotations

import math

import torch
from torch import nn


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoPE) in the split-halves layout used by LLaMA/GPT-NeoX."""

    inv_freq: torch.Tensor

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        # Not a parameter and not saved: it is a pure function of head_dim and base.
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of shape ``[s, head_dim]`` for integer positions ``[s]``."""
        freqs = torch.outer(positions.float(), self.inv_freq)  # [s, d/2]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos(), emb.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` ``[b, h, s, d]`` by the angles in cos/sin ``[s, d]``."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return (x * cos.to(x.dtype)) + (rotated * sin.to(x.dtype))


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """Per-head slopes of ALiBi: a geometric sequence, interleaved when heads are not 2^k."""

    def power_of_two_slopes(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(num_heads).is_integer():
        slopes = power_of_two_slopes(num_heads)
    else:
        closest = 2 ** math.floor(math.log2(num_heads))
        slopes = power_of_two_slopes(closest)
        slopes += power_of_two_slopes(2 * closest)[0::2][: num_heads - closest]
    return torch.tensor(slopes, dtype=torch.float32)


def alibi_bias(num_heads: int, length: int, device: torch.device | None = None) -> torch.Tensor:
    """Additive bias ``[1, h, s, s]``: minus slope times the distance between positions."""
    positions = torch.arange(length, device=device)
    distance = (positions[None, :] - positions[:, None]).abs().float()  # [s, s]
    return -(alibi_slopes(num_heads).to(distance.device)[:, None, None] * distance)[None]


class RelativePositionBias(nn.Module):
    """T5's learned bias per head over log-spaced buckets of relative distance."""

    def __init__(
        self,
        num_heads: int,
        num_buckets: int = 32,
        max_distance: int = 128,
        bidirectional: bool = True,
    ):
        super().__init__()
        self.bias = nn.Embedding(num_buckets, num_heads)
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.bidirectional = bidirectional

    def bucket(self, relative: torch.Tensor) -> torch.Tensor:
        num_buckets = self.num_buckets
        result = torch.zeros_like(relative)
        if self.bidirectional:
            num_buckets //= 2
            result += (relative > 0).long() * num_buckets
            relative = relative.abs()
        else:
            relative = -torch.clamp(relative, max=0)
        exact = num_buckets // 2
        is_small = relative < exact
        # Distances beyond `exact` share buckets on a log scale up to max_distance.
        log_bucket = (
            exact
            + (
                torch.log(relative.float().clamp(min=1) / exact)
                / math.log(self.max_distance / exact)
                * (num_buckets - exact)
            ).long()
        )
        log_bucket = torch.clamp(log_bucket, max=num_buckets - 1)
        return result + torch.where(is_small, relative, log_bucket)

    def forward(self, query_length: int, key_length: int) -> torch.Tensor:
        """Additive bias ``[1, h, q, k]``."""
        device = self.bias.weight.device
        context = torch.arange(query_length, device=device)[:, None]
        memory = torch.arange(key_length, device=device)[None, :]
        buckets = self.bucket(memory - context)  # [q, k]
        return self.bias(buckets).permute(2, 0, 1)[None]
