"""Sentence-pair pre-training targets: next-sentence (BERT) and sentence-order (ALBERT)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from pretrainkit.targets.base import TARGETS, Target, TargetOutput, accuracy


class _PairTarget(Target):
    label_key = "pair_labels"
    metric_name = "pair"

    def __init__(self, hidden_size: int):
        super().__init__()
        # BERT's pooler: the first token through dense + tanh, then a two-way classifier.
        self.pooler = nn.Linear(hidden_size, hidden_size)
        self.classifier = nn.Linear(hidden_size, 2)

    def forward(self, hidden_states, attention_mask, labels) -> TargetOutput:
        logits = self.classifier(self.pooler(hidden_states[:, 0]).tanh())
        if labels is None:
            return TargetOutput(None, logits)
        loss = F.cross_entropy(logits.float(), labels)
        name = self.metric_name
        return TargetOutput(
            loss,
            logits,
            {
                f"{name}_loss": loss.detach(),
                f"{name}_accuracy": accuracy(logits.detach(), labels),
            },
        )


@TARGETS.register("nsp")
class NextSentenceTarget(_PairTarget):
    metric_name = "nsp"


@TARGETS.register("sop")
class SentenceOrderTarget(_PairTarget):
    metric_name = "sop"
