"""Sequence regression: one score per sequence or sentence pair (STS-B similarity)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from pretrainkit.config.typed import check_choice
from pretrainkit.targets.base import TARGETS, Target, TargetOutput
from pretrainkit.targets.classification import POOLINGS, pool


@TARGETS.register("regression")
class RegressionTarget(Target):
    """Pool → (pooler dense + tanh) → dropout → linear to one score; mean squared error.

    Logits are the scores ``[b]``; labels are float ``[b]``.

    Args:
        hidden_size: encoder width.
        pooling: first | mean | max | last.
        pooler: BERT-style dense + tanh on the pooled vector.
        dropout: before the output layer.
    """

    def __init__(
        self, hidden_size: int, pooling: str = "mean", pooler: bool = False, dropout: float = 0.1
    ):
        super().__init__()
        check_choice(pooling, POOLINGS, "pooling")
        self.pooling = pooling
        self.pooler = nn.Linear(hidden_size, hidden_size) if pooler else None
        self.dropout = nn.Dropout(dropout)
        self.regressor = nn.Linear(hidden_size, 1)

    def forward(self, hidden_states, attention_mask, labels) -> TargetOutput:
        x = pool(hidden_states, attention_mask, self.pooling)
        if self.pooler is not None:
            x = self.pooler(x).tanh()
        scores = self.regressor(self.dropout(x)).squeeze(-1)  # [b]
        if labels is None:
            return TargetOutput(None, scores)
        loss = F.mse_loss(scores.float(), labels.float())
        return TargetOutput(loss, scores, {"mse": loss.detach()})
