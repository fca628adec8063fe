"""Sequence classification (and regression with one output): the downstream target."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pretrainkit.config.typed import check_choice
from pretrainkit.errors import ConfigError
from pretrainkit.targets.base import TARGETS, Target, TargetOutput, accuracy

POOLINGS = ("first", "mean", "max", "last")


def pool(
    hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, pooling: str
) -> torch.Tensor:
    """``[b, s, h]`` → ``[b, h]``, ignoring padding."""
    if pooling == "first":
        return hidden_states[:, 0]
    if attention_mask is None:
        attention_mask = torch.ones(hidden_states.shape[:2], device=hidden_states.device)
    mask = attention_mask.to(hidden_states.dtype)[..., None]  # [b, s, 1]
    if pooling == "mean":
        return (hidden_states * mask).sum(1) / mask.sum(1).clamp(min=1)
    if pooling == "max":
        return (
            hidden_states.masked_fill(mask == 0, torch.finfo(hidden_states.dtype).min).max(1).values
        )
    last = attention_mask.long().sum(1).clamp(min=1) - 1  # right padding
    return hidden_states[torch.arange(hidden_states.shape[0]), last]


@TARGETS.register("classification")
class ClassificationTarget(Target):
    """Pool → (pooler dense + tanh) → dropout → linear over the labels; cross-entropy.

    Args:
        hidden_size: encoder width.
        labels: the label strings, in class-index order (kept with the model).
        pooling: first | mean | max | last.
        pooler: BERT-style dense + tanh on the pooled vector.
        dropout: before the classifier.
    """

    def __init__(
        self,
        hidden_size: int,
        labels: list[str],
        pooling: str = "first",
        pooler: bool = True,
        dropout: float = 0.1,
    ):
        super().__init__()
        check_choice(pooling, POOLINGS, "pooling")
        if len(labels) < 2:
            raise ConfigError(f"labels: a classifier needs at least two labels, got {labels!r}")
        self.labels = [str(label) for label in labels]
        self.pooling = pooling
        self.pooler = nn.Linear(hidden_size, hidden_size) if pooler else None
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, len(labels))

    def forward(self, hidden_states, attention_mask, labels) -> TargetOutput:
        x = pool(hidden_states, attention_mask, self.pooling)
        if self.pooler is not None:
            x = self.pooler(x).tanh()
        logits = self.classifier(self.dropout(x))  # [b, num_labels]
        if labels is None:
            return TargetOutput(None, logits)
        if bool((labels == -100).all()):  # rows without a gold label only (distillation)
            return TargetOutput(logits.sum() * 0.0, logits)
        loss = F.cross_entropy(logits.float(), labels)  # -100 rows are skipped
        return TargetOutput(loss, logits, {"accuracy": accuracy(logits.detach(), labels)})
