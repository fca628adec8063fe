"""LayerNorm and RMSNorm behind one constructor."""

from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    """Root-mean-square norm (LLaMA, T5): no mean subtraction, no bias."""

    def __init__(self, size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32 even under autocast: the variance of bf16 values is too coarse.
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def make_norm(kind: str, size: int, eps: float) -> nn.Module:
    if kind == "layernorm":
        return nn.LayerNorm(size, eps=eps)
    if kind == "rmsnorm":
        return RMSNorm(size, eps=eps)
    raise ValueError(f"unknown norm {kind!r}")


def make_activation(name: str) -> nn.Module:
    if name == "gelu":
        return nn.GELU()
    if name == "gelu_tanh":
        return nn.GELU(approximate="tanh")
    if name == "relu":
        return nn.ReLU()
    if name == "silu":
        return nn.SiLU()
    raise ValueError(f"unknown activation {name!r}")
