"""Contrastive (InfoNCE) target: sentence embeddings trained with in-batch negatives (SimCSE;
reusable by supervised SimCSE with hard negatives and other anchor/candidate recipes)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pretrainkit.config.typed import check_choice, check_range
from pretrainkit.targets.base import TARGETS, Target, TargetOutput, accuracy
from pretrainkit.targets.classification import pool

# The names of ``Model.encode`` (encoding.POOLINGS), so that a recorded pooling means the same
# thing at training and at embedding time.
POOLINGS = ("cls", "mean", "max")


def info_nce(
    anchors: torch.Tensor, candidates: torch.Tensor, labels: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE loss of ``anchors`` ``[b, h]`` against ``candidates`` ``[c, h]``.

    ``logits[i, j] = cos(anchors[i], candidates[j]) / temperature``; the loss is the
    cross-entropy of each anchor's softmax over all candidates with ``labels[i]`` (the index of
    its positive) as target. Returns ``(loss, logits)``, both fp32.
    """
    # fp32: at temperature 0.05 the logits reach 20 and bf16 cosines would round to 1/128.
    a = F.normalize(anchors.float(), dim=-1)
    c = F.normalize(candidates.float(), dim=-1)
    logits = a @ c.T / temperature  # [b, c]
    return F.cross_entropy(logits, labels), logits


@TARGETS.register("contrastive")
class ContrastiveTarget(Target):
    """Pool each sequence to an embedding; with labels, InfoNCE with in-batch negatives.

    The logits are the pooled embeddings ``[n, h]`` (what ``Model.encode`` gives with the same
    pooling; the target has no weights, so the embeddings are the encoder's own).

    With labels ``[b]``, the ``n`` rows are read as ``b`` anchors followed by ``n - b``
    candidates, and ``labels[i]`` is the index among the candidates of anchor ``i``'s positive;
    every other candidate is a negative. Unsupervised SimCSE feeds every sentence twice
    (``n = 2b``, the second copy as candidates, ``labels = arange(b)``) and the two copies
    differ only through dropout; a recipe with hard negatives appends them as more candidates.

    Args:
        hidden_size: encoder width (unused: the head has no weights).
        pooling: cls | mean | max.
        temperature: the softmax temperature tau of the cosine similarities.
    """

    def __init__(self, hidden_size: int, pooling: str = "mean", temperature: float = 0.05):
        super().__init__()
        check_choice(pooling, POOLINGS, "pooling")
        check_range(temperature, "temperature", 1e-4, 100.0)
        self.pooling = pooling
        self.temperature = float(temperature)

    def forward(self, hidden_states, attention_mask, labels) -> TargetOutput:
        which = "first" if self.pooling == "cls" else self.pooling
        embeddings = pool(hidden_states, attention_mask, which)  # [n, h]
        if labels is None:
            return TargetOutput(None, embeddings)
        anchors = labels.shape[0]
        if labels.dim() != 1 or not 0 < anchors < embeddings.shape[0]:
            raise ValueError(
                f"contrastive: labels must be [anchors] with fewer anchors than the "
                f"{embeddings.shape[0]} rows, got {list(labels.shape)}"
            )
        loss, logits = info_nce(
            embeddings[:anchors], embeddings[anchors:], labels, self.temperature
        )
        metrics = {"contrastive_accuracy": accuracy(logits.detach(), labels)}
        return TargetOutput(loss, embeddings, metrics)
