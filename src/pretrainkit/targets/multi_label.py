"""Multi-label classification: any number of labels per text, one sigmoid per label."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from pretrainkit.config.typed import check_choice
from pretrainkit.errors import ConfigError
from pretrainkit.targets.base import TARGETS, Target, TargetOutput
from pretrainkit.targets.classification import POOLINGS, pool


@TARGETS.register("multi_label")
class MultiLabelTarget(Target):
    """Pool → (pooler dense + tanh) → dropout → linear over the labels; binary cross-entropy
    per label (labels are independent: a row may have none, one or several).

    Labels are a float multi-hot ``[b, L]`` (the task's ``collate`` stacks them).

    Args:
        hidden_size: encoder width.
        labels: the label strings, in column order (kept with the model).
        pooling: first | mean | max | last.
        pooler: BERT-style dense + tanh on the pooled vector.
        dropout: before the classifier.
    """

    def __init__(
        self,
        hidden_size: int,
        labels: list[str],
        pooling: str = "mean",
        pooler: bool = True,
        dropout: float = 0.1,
    ):
        super().__init__()
        check_choice(pooling, POOLINGS, "pooling")
        if not labels:
            raise ConfigError("labels: a multi-label head needs at least one label")
        self.labels = [str(label) for label in labels]
        self.pooling = pooling
        self.pooler = nn.Linear(hidden_size, hidden_size) if pooler else None
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, len(labels))

    def forward(self, hidden_states, attention_mask, labels) -> TargetOutput:
        x = pool(hidden_states, attention_mask, self.pooling)
        if self.pooler is not None:
            x = self.pooler(x).tanh()
        logits = self.classifier(self.dropout(x))  # [b, L]
        if labels is None:
            return TargetOutput(None, logits)
        loss = F.binary_cross_entropy_with_logits(logits.float(), labels.float())
        # Subset accuracy at the default threshold (logit 0): a cheap signal for the run log.
        exact = ((logits.detach() >= 0) == (labels >= 0.5)).all(-1).float().mean()
        return TargetOutput(loss, logits, {"exact_match": exact})
