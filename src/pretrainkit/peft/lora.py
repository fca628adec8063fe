"""LoRA (Hu et al. 2021): a chosen projection computes ``W x + b + (alpha / r) · B A x``.

``A`` ``[r, in]`` starts Kaiming-uniform and ``B`` ``[out, r]`` at zero, so the wrapped model
starts exactly as the base; only ``A`` and ``B`` train. ``merge`` folds ``scale · B A`` into
``W`` and puts a plain ``nn.Linear`` back.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pretrainkit.errors import ConfigError
from pretrainkit.layers.attention import MultiHeadAttention
from pretrainkit.layers.feed_forward import FeedForward, GatedFeedForward
from pretrainkit.model import Model
from pretrainkit.peft.core import PEFT_METHODS, PeftMethod, body_modules, replace_module
from pretrainkit.peft.options import LoraOptions

# The modules whose projections LoRA may wrap.
OWNERS = (MultiHeadAttention, FeedForward, GatedFeedForward)


class LoraLinear(nn.Module):
    """``linear`` plus a low-rank update; it keeps the linear's own ``weight`` and ``bias``
    (same parameter names, so the base's weights load into it unchanged). Not an
    ``nn.Linear``: code that handles every Linear by its weight alone (SAMP's quantization)
    must not take it for one and drop the update.

    Args:
        linear: the projection wrapped (its parameters are shared, not copied).
        rank: r, the inner width of the update.
        scale: alpha / r.
        dropout: on the update's input, in training.
    """

    weight: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, linear: nn.Linear, rank: int, scale: float, dropout: float = 0.0):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.register_parameter("bias", linear.bias)
        device, dtype = linear.weight.device, linear.weight.dtype
        self.lora_a = nn.Parameter(
            torch.empty(rank, self.in_features, device=device, dtype=dtype)
        )  # [r, in]
        self.lora_b = nn.Parameter(
            torch.zeros(self.out_features, rank, device=device, dtype=dtype)
        )  # [out, r]
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as nn.Linear (and HF peft)
        self.scale = scale
        self.lora_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = F.linear(x, self.weight, self.bias)  # [..., out]
        update = F.linear(F.linear(self.lora_dropout(x), self.lora_a), self.lora_b)  # [..., out]
        return base + self.scale * update

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` computing the same function (dropout aside)."""
        linear = nn.Linear(
            self.in_features,
            self.out_features,
            bias=self.bias is not None,
            device=self.weight.device,
            dtype=self.weight.dtype,
        )
        with torch.no_grad():
            delta = (self.lora_b.float() @ self.lora_a.float()) * self.scale  # [out, in]
            linear.weight.copy_(self.weight.float() + delta)
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        linear.weight.requires_grad_(self.weight.requires_grad)
        return linear


def lora_layers(model: Model) -> dict[str, LoraLinear]:
    return {name: m for name, m in body_modules(model) if isinstance(m, LoraLinear)}


@PEFT_METHODS.register("lora")
class Lora(PeftMethod):
    """Wrap the chosen projections (``lora_targets``) of every attention and feed-forward."""

    name = "lora"
    options: LoraOptions

    def apply(self, model: Model) -> list[str]:
        wanted = self.options.targets
        found: dict[str, nn.Linear] = {}
        existing: set[str] = set()
        for name, module in list(body_modules(model)):
            if not isinstance(module, OWNERS):
                continue
            for attribute, child in module.named_children():
                if isinstance(child, nn.Linear):
                    existing.add(attribute)
                    if attribute in wanted and not isinstance(child, LoraLinear):
                        found[f"{name}.{attribute}"] = child
        matched = {name.rpartition(".")[2] for name in found}
        unmatched = [t for t in wanted if t not in matched]
        if unmatched:
            raise ConfigError(
                f"lora_targets: {', '.join(unmatched)} matched no module of this model; looked "
                f"for {', '.join(wanted)} in its attention and feed-forward layers, which have "
                f"{', '.join(sorted(existing)) or 'no projections'}"
            )
        options = self.options
        for name, linear in found.items():
            wrapped = LoraLinear(linear, options.lora_rank, options.scale, options.lora_dropout)
            replace_module(model, name, wrapped)
        return [f"{name}.{p}" for name in found for p in ("lora_a", "lora_b")]

    def merge(self, model: Model) -> None:
        for name, layer in lora_layers(model).items():
            replace_module(model, name, layer.merged())
