"""BitFit (Ben Zaken et al. 2022): only the bias terms of the body train (and the head)."""

from __future__ import annotations

from pretrainkit.errors import ConfigError
from pretrainkit.model import Model
from pretrainkit.peft.core import BODY, PEFT_METHODS, PeftMethod


@PEFT_METHODS.register("bitfit")
class BitFit(PeftMethod):
    name = "bitfit"

    def apply(self, model: Model) -> list[str]:
        names = [
            name
            for name, _ in model.named_parameters()
            if name.split(".", 1)[0] in BODY and name.rsplit(".", 1)[-1] == "bias"
        ]
        if not names:
            raise ConfigError("bitfit trains the bias terms, and this model has none")
        return names
