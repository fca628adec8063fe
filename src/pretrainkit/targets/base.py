"""What every target is: a head that reads hidden states and one label key, returning a loss."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from pretrainkit.registry import Registry


@dataclass
class TargetOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


class Target(nn.Module):
    """Base class. ``label_key`` names the batch entry the target learns from.

    ``tie_word_embedding`` names a Linear attribute whose weight is shared with the word
    embedding; the model ties it explicitly (``Model.tie_weights``).
    """

    label_key: str = "labels"
    tie_word_embedding: str | None = None

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        labels: torch.Tensor | None,
    ) -> TargetOutput:
        raise NotImplementedError


TARGETS: Registry[type[Target]] = Registry("target")


def accuracy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Share of kept positions whose gold logit is the largest (ties count as correct).

    Compared against ``amax`` rather than ``argmax``: on vocab-sized bf16 logits argmax is
    about 20x slower on CPU, and this runs every training step.
    """
    keep = labels != ignore_index
    gold = logits.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    correct = (gold >= logits.amax(-1)) & keep
    return correct.sum().float() / keep.sum().clamp(min=1)
