"""Siamese (bi-encoder) similarity under several perspectives: each text is encoded on its own,
so a text's vectors can be computed once and compared with many others."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from pretrainkit.config.typed import check_choice
from pretrainkit.errors import ConfigError
from pretrainkit.targets.base import TARGETS, Target, TargetOutput
from pretrainkit.targets.classification import POOLINGS, pool


@TARGETS.register("siamese")
class SiameseTarget(Target):
    """Pool each sequence → one linear projection per perspective → cosine of the pair's two
    projections / ``temperature`` → sigmoid; binary cross-entropy per perspective.

    The model sees both texts of a pair as their own sequences, ``[2b, s]`` for ``b`` pairs,
    a pair's texts in consecutive rows (``Siamese.collate`` and its batches lay them out so).
    The logits are ``[b, P]``: one per pair and perspective.

    The cosine bounds a logit to ±1/temperature: with the default 0.5 a probability stays in
    [0.12, 0.88], which keeps the loss from pushing the encoder to saturate on easy pairs;
    the decision (probability 0.5) is at cosine 0.

    Args:
        hidden_size: encoder width.
        labels: the perspective names, in column order (kept with the model).
        projection_size: width of each perspective's projection.
        pooling: first | mean | max | last.
        temperature: the cosine is divided by it.
        dropout: before the projections.
    """

    def __init__(
        self,
        hidden_size: int,
        labels: list[str],
        projection_size: int = 128,
        pooling: str = "mean",
        temperature: float = 0.5,
        dropout: float = 0.1,
    ):
        super().__init__()
        check_choice(pooling, POOLINGS, "pooling")
        if not labels:
            raise ConfigError("labels: a siamese head needs at least one perspective")
        if not isinstance(projection_size, int) or projection_size < 1:
            raise ConfigError(
                f"projection_size must be a positive integer, got {projection_size!r}"
            )
        if isinstance(temperature, bool) or not temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {temperature!r}")
        self.labels = [str(label) for label in labels]
        self.pooling = pooling
        self.temperature = float(temperature)
        self.projection_size = projection_size
        self.dropout = nn.Dropout(dropout)
        # All perspectives in one matrix: one matmul, each perspective its own slice.
        self.projection = nn.Linear(hidden_size, len(labels) * projection_size)

    def forward(self, hidden_states, attention_mask, labels) -> TargetOutput:
        x = pool(hidden_states, attention_mask, self.pooling)  # [2b, h]
        if x.shape[0] % 2:
            raise ValueError(f"siamese: expected pairs of sequences, got {x.shape[0]} sequences")
        projected = self.projection(self.dropout(x))  # [2b, P·d]
        projected = projected.float().view(x.shape[0] // 2, 2, len(self.labels), -1)
        u, v = projected[:, 0], projected[:, 1]  # [b, P, d] each
        logits = F.cosine_similarity(u, v, dim=-1) / self.temperature  # [b, P]
        if labels is None:
            return TargetOutput(None, logits)
        if labels.shape != logits.shape:
            raise ValueError(
                f"siamese: labels must be [pairs, perspectives] {list(logits.shape)}, "
                f"got {list(labels.shape)}"
            )
        loss = F.binary_cross_entropy_with_logits(logits, labels.float())
        accuracy = ((logits.detach() >= 0) == (labels >= 0.5)).float().mean()
        return TargetOutput(loss, logits, {"accuracy": accuracy})
