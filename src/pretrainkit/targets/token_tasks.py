"""Per-token downstream targets: token classification (tagging) and span extraction (QA)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pretrainkit.errors import ConfigError
from pretrainkit.targets.base import TARGETS, Target, TargetOutput, accuracy

IGNORE = -100


@TARGETS.register("token_classification")
class TokenClassificationTarget(Target):
    """Dropout → linear over the labels at every token; cross-entropy ignoring -100.

    Labels are ``[b, s]`` class indices with -100 on padding and on the sub-tokens after a
    word's first one, as HF's token-classification heads expect.

    Args:
        hidden_size: encoder width.
        labels: the tag strings, in class-index order (kept with the model).
        dropout: before the classifier.
    """

    def __init__(self, hidden_size: int, labels: list[str], dropout: float = 0.1):
        super().__init__()
        if len(labels) < 2:
            raise ConfigError(f"labels: a tagger needs at least two labels, got {labels!r}")
        self.labels = [str(label) for label in labels]
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, len(labels))

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        labels: torch.Tensor | None,
    ) -> TargetOutput:
        logits = self.classifier(self.dropout(hidden_states))  # [b, s, num_labels]
        if labels is None:
            return TargetOutput(None, logits)
        flat_logits = logits.float().reshape(-1, logits.shape[-1])
        flat_labels = labels.reshape(-1)
        # Mean over kept tokens only, exactly what HF's CrossEntropyLoss(ignore_index=-100) does.
        loss = F.cross_entropy(flat_logits, flat_labels, ignore_index=IGNORE)
        return TargetOutput(
            loss, logits, {"token_accuracy": accuracy(logits.detach(), labels, IGNORE)}
        )


@TARGETS.register("span_extraction")
class SpanExtractionTarget(Target):
    """SQuAD-style answer span: a linear hidden → (start, end) logit per token.

    Its labels are ``span_positions`` ``[b, 2]`` (start and end token index; ``Model.forward``
    stacks ``start_positions`` and ``end_positions``). A position outside ``[0, s)`` (e.g. -100)
    is ignored. The loss is the mean of the start and end cross-entropies, as in BERT.

    Logits are ``[b, s, 2]`` with padding set to the dtype's minimum, so neither the softmax nor
    an argmax can pick a padding token.

    Args:
        hidden_size: encoder width.
    """

    label_key = "span_positions"

    def __init__(self, hidden_size: int):
        super().__init__()
        self.output = nn.Linear(hidden_size, 2)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        labels: torch.Tensor | None,
    ) -> TargetOutput:
        logits = self.output(hidden_states)  # [b, s, 2]
        if attention_mask is not None:
            padding = (attention_mask == 0).unsqueeze(-1)
            logits = logits.masked_fill(padding, torch.finfo(logits.dtype).min)
        if labels is None:
            return TargetOutput(None, logits)
        seq_len = logits.shape[1]
        # Out-of-range positions (truncated answers, -100) carry no signal: ignore them.
        positions = labels.masked_fill((labels < 0) | (labels >= seq_len), IGNORE)
        scores = logits.float().transpose(1, 2)  # [b, 2, s]: one distribution per boundary
        start_loss = F.cross_entropy(scores[:, 0], positions[:, 0], ignore_index=IGNORE)
        end_loss = F.cross_entropy(scores[:, 1], positions[:, 1], ignore_index=IGNORE)
        detached = scores.detach()
        return TargetOutput(
            (start_loss + end_loss) / 2,
            logits,
            {
                "start_loss": start_loss.detach(),
                "end_loss": end_loss.detach(),
                "start_accuracy": accuracy(detached[:, 0], positions[:, 0], IGNORE),
                "end_accuracy": accuracy(detached[:, 1], positions[:, 1], IGNORE),
            },
        )
