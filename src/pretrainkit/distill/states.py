"""What distillation compares: one model's embedding output, every layer's output, optionally
its attention probabilities, its heads' logits and a pooled sentence vector, for one input."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from pretrainkit.errors import ConfigError
from pretrainkit.layers.attention import record_attention
from pretrainkit.model import Model, ModelOutput
from pretrainkit.targets.classification import pool

# The batch keys a view of the input reads; a prefix names another view (``translation_``:
# the same sentence in another language; ``teacher_``: the teacher's own token ids).
INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class States:
    """One model's states for one input.

    Attributes:
        mask: the padding mask ``[b, s]`` (1 = real token), or None for unpadded input.
        hidden: ``hidden[0]`` the embedding output, ``hidden[i]`` the output of layer ``i``
            (an application of a shared block counts as a layer), each ``[b, s, h]``.
        attentions: ``attentions[i - 1]`` layer ``i``'s probabilities ``[b, heads, s, s]``
            (empty unless asked for).
        output: the heads' output (logits, the student's own loss), when asked for.
    """

    mask: torch.Tensor | None
    hidden: list[torch.Tensor]
    attentions: list[torch.Tensor] = field(default_factory=list)
    output: ModelOutput | None = None

    @property
    def num_layers(self) -> int:
        return len(self.hidden) - 1

    def sentence(self, pooling: str) -> torch.Tensor:
        """A sentence vector ``[b, h]`` pooled as ``Model.encode`` pools (``cls``, ``mean``,
        ``max``, ``first-last-avg``)."""
        if pooling == "first-last-avg":
            return pool((self.hidden[1] + self.hidden[-1]) / 2, self.mask, "mean")
        return pool(self.hidden[-1], self.mask, "first" if pooling == "cls" else pooling)


def view(batch: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The input of one view: ``prefix + key`` for the input keys, as the model's names."""
    return {key: batch[prefix + key] for key in INPUT_KEYS if prefix + key in batch}


def check_distillable(model: Model, role: str) -> None:
    """Distillation reads every layer of a transformer encoder; name what else is refused."""
    if model.decoder is not None:
        raise ConfigError(
            f"the {role} is a sequence-to-sequence model: distillation reads an encoder's "
            "layers and does not support decoders yet"
        )
    if not hasattr(model.encoder, "layer_outputs"):
        raise ConfigError(
            f"the {role}'s encoder ({type(model.encoder).__name__}) cannot return every "
            "layer's output, which distillation compares"
        )


def run_states(
    model: Model,
    inputs: dict[str, Any],
    attentions: bool = False,
    targets: dict[str, Any] | None = None,
) -> States:
    """Run ``model`` once on ``inputs`` (``input_ids``, ``attention_mask``, ``token_type_ids``)
    keeping what the losses need.

    Args:
        attentions: record every layer's attention probabilities (the slower explicit path).
        targets: run the heads on the last layer with these labels (``labels`` ...; an empty
            mapping runs them without labels); None leaves the heads out.
    """
    if "input_ids" not in inputs:
        raise ConfigError("distillation batch has no input_ids")
    mask = model.encoder_mask(inputs.get("attention_mask"))
    embedded = model.embedding(inputs["input_ids"], inputs.get("token_type_ids"))  # [b, s, h]
    if attentions:
        with record_attention(model.encoder) as recorded:
            layers = model.encoder.layer_outputs(embedded, mask)  # type: ignore[operator]
        maps = list(recorded)
    else:
        layers = model.encoder.layer_outputs(embedded, mask)  # type: ignore[operator]
        maps = []
    output = None
    if targets is not None:
        given = {key: targets.get(key) for key in ("labels", "pair_labels")}
        output = model.run_targets(layers[-1], mask, given)
    return States(mask, [embedded, *layers], maps, output)
