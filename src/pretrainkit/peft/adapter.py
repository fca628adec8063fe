"""Bottleneck adapters (Houlsby et al. 2019): after the attention and / or the feed-forward
sub-layer of every transformer block, ``y + up(gelu(down(y)))``.

The adapter sits on the sub-layer's last projection (attention ``output``, feed-forward
``down``), before the residual sum, as in Houlsby's placement; ``up`` starts at zero so the
model starts as the base. Adapters add a non-linearity, so they cannot be merged into the
weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pretrainkit.errors import ConfigError
from pretrainkit.layers.block import TransformerBlock
from pretrainkit.model import Model
from pretrainkit.peft.core import PEFT_METHODS, PeftMethod, body_modules, replace_module
from pretrainkit.peft.options import AdapterOptions

# Place → the projection (inside the block) the adapter follows.
PROJECTIONS = {"attention": "attention.output", "ffn": "feed_forward.down"}


class AdapterLinear(nn.Module):
    """``linear`` followed by a residual bottleneck adapter; it keeps the linear's own
    ``weight`` and ``bias`` names (not an ``nn.Linear``: nothing may take it for a plain one).

    Args:
        linear: the sub-layer's output projection (its parameters are shared, not copied).
        size: the bottleneck width.
    """

    weight: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, linear: nn.Linear, size: int):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.register_parameter("bias", linear.bias)
        device, dtype = linear.weight.device, linear.weight.dtype
        self.adapter_down = nn.Linear(self.out_features, size, device=device, dtype=dtype)
        self.adapter_up = nn.Linear(size, self.out_features, device=device, dtype=dtype)
        nn.init.normal_(self.adapter_down.weight, std=0.02)
        nn.init.zeros_(self.adapter_down.bias)
        nn.init.zeros_(self.adapter_up.weight)  # the adapter starts as the identity
        nn.init.zeros_(self.adapter_up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)  # [..., h]
        return y + self.adapter_up(F.gelu(self.adapter_down(y)))


@PEFT_METHODS.register("adapter")
class Adapter(PeftMethod):
    """An adapter after the chosen sub-layers (``adapter_places``) of every block."""

    name = "adapter"
    options: AdapterOptions

    def apply(self, model: Model) -> list[str]:
        blocks = [name for name, m in body_modules(model) if isinstance(m, TransformerBlock)]
        if not blocks:
            raise ConfigError("adapter: the model has no transformer blocks to put adapters in")
        trained = []
        for block in blocks:
            for place in self.options.places:
                name = f"{block}.{PROJECTIONS[place]}"
                linear = model.get_submodule(name)
                if isinstance(linear, AdapterLinear):
                    continue  # a block shared by several layers (ALBERT) gets one adapter
                if not isinstance(linear, nn.Linear):
                    raise ConfigError(f"adapter: {name} is not a linear projection")
                replace_module(model, name, AdapterLinear(linear, self.options.adapter_size))
                trained += [f"{name}.adapter_{part}" for part in ("down", "up")]
        return [f"{name}.{kind}" for name in trained for kind in ("weight", "bias")]

    def merge(self, model: Model) -> None:
        raise ConfigError(
            "adapters cannot be merged into the weights: an adapter adds a non-linear "
            "bottleneck (gelu) that no plain layer computes; use the PEFT folder as it is "
            "(pretrainkit.load / evaluate / predict load it with its base)"
        )
