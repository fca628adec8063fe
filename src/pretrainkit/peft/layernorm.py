"""LayerNorm-only tuning: only the normalisation layers' parameters (gains, and biases where a
norm has them) of the body train, and the head."""

from __future__ import annotations

from torch import nn

from pretrainkit.errors import ConfigError
from pretrainkit.layers.norms import RMSNorm
from pretrainkit.model import Model
from pretrainkit.peft.core import PEFT_METHODS, PeftMethod, body_modules

NORMS = (nn.LayerNorm, RMSNorm)


@PEFT_METHODS.register("layernorm")
class LayerNormOnly(PeftMethod):
    name = "layernorm"

    def apply(self, model: Model) -> list[str]:
        names = [
            f"{module_name}.{name}"
            for module_name, module in body_modules(model)
            if isinstance(module, NORMS)
            for name, _ in module.named_parameters(recurse=False)
        ]
        if not names:
            raise ConfigError("layernorm trains the normalisation layers, and this model has none")
        return names
