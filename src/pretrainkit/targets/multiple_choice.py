"""Multiple choice: one score per (question, choice) sequence, a softmax over each question's
choices (C3, RACE, SWAG, ChID's candidate idioms)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pretrainkit.config.typed import check_choice
from pretrainkit.errors import ConfigError
from pretrainkit.targets.base import TARGETS, Target, TargetOutput, accuracy
from pretrainkit.targets.classification import POOLINGS, pool

# The label of a padding choice (the batch's ignore value, as for token labels).
PADDING_CHOICE = -100


@TARGETS.register("multiple_choice")
class MultipleChoiceTarget(Target):
    """Pool → (pooler dense + tanh) → dropout → linear to one score per sequence.

    The model sees every choice as its own sequence, ``[b·c, s]`` for ``b`` questions of ``c``
    choices, a question's choices in consecutive rows (``MultipleChoice.collate`` lays a
    training batch out so). The logits are the flat scores ``[b·c]``. With labels, the scores
    are read as ``[b, c]`` and the loss is the cross-entropy of the softmax over each question's
    choices.

    ``labels`` ``[b, c]`` give, on every real choice of a question, the index of its answer, and
    ``PADDING_CHOICE`` (-100) on the padding choices that fill a question up to the ``c`` of
    its batch: those get a score of -inf, so they never win and take no gradient.

    Args:
        hidden_size: encoder width.
        num_choices: the most choices a question may have (``c`` <= ``num_choices``).
        pooling: first | mean | max | last.
        pooler: BERT-style dense + tanh on the pooled vector.
        dropout: before the scorer.
    """

    def __init__(
        self,
        hidden_size: int,
        num_choices: int = 4,
        pooling: str = "first",
        pooler: bool = True,
        dropout: float = 0.1,
    ):
        super().__init__()
        check_choice(pooling, POOLINGS, "pooling")
        if not isinstance(num_choices, int) or num_choices < 2:
            raise ConfigError(f"num_choices must be an integer >= 2, got {num_choices!r}")
        self.num_choices = num_choices
        self.pooling = pooling
        self.pooler = nn.Linear(hidden_size, hidden_size) if pooler else None
        self.dropout = nn.Dropout(dropout)
        self.scorer = nn.Linear(hidden_size, 1)

    def forward(self, hidden_states, attention_mask, labels) -> TargetOutput:
        x = pool(hidden_states, attention_mask, self.pooling)  # [b·c, h]
        if self.pooler is not None:
            x = self.pooler(x).tanh()
        scores = self.scorer(self.dropout(x)).squeeze(-1)  # [b·c]
        if labels is None:
            return TargetOutput(None, scores)
        grouped, gold = self.grouped(scores, labels)
        loss = F.cross_entropy(grouped, gold)
        return TargetOutput(loss, scores, {"accuracy": accuracy(grouped.detach(), gold)})

    def grouped(
        self, scores: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat scores ``[b·c]`` and labels ``[b, c]`` → scores ``[b, c]`` (fp32, -inf on the
        padding choices) and each question's answer index ``[b]``."""
        if (
            labels.dim() != 2
            or labels.numel() != scores.shape[0]
            or not 2 <= labels.shape[1] <= self.num_choices
        ):
            raise ValueError(
                f"multiple_choice: labels must be [questions, choices] with 2 to num_choices "
                f"{self.num_choices} choices covering the {scores.shape[0]} sequences, got "
                f"{list(labels.shape)}"
            )
        grouped = scores.float().reshape(labels.shape)
        grouped = grouped.masked_fill(labels == PADDING_CHOICE, float("-inf"))
        # A question's first choice is always real (questions have at least two choices).
        return grouped, labels[:, 0]
