"""Cloze scoring: the masked-LM head read at a mask slot, restricted to a few candidate words
(prompt-based classification: "... It was [MASK] ." scored on "great" vs "terrible")."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pretrainkit.errors import ConfigError
from pretrainkit.targets.base import TARGETS, TargetOutput, accuracy
from pretrainkit.targets.language_model import MaskedLMTarget


@TARGETS.register("cloze")
class ClozeTarget(MaskedLMTarget):
    """BERT's MLM head (the same parameters, under the same names, as the ``mlm`` target, so a
    pre-trained ``mlm`` head loads into it key for key) scoring candidate words.

    Labels are MLM labels: ``[b, s]``, -100 everywhere but at the mask slot, which holds the
    vocabulary id of the gold word. The loss is the cross-entropy over the candidates at that
    slot; without candidates every word of the vocabulary is one (the plain MLM loss).

    Args:
        hidden_size: encoder width.
        embedding_size: width of the word embedding the decoder is tied to.
        vocab_size: the vocabulary's size.
        word_ids: the candidate words' vocabulary ids, in label order; empty: the vocabulary.
        activation, norm, norm_eps: as the ``mlm`` target's.

    Returns logits ``[n, C]`` at the n mask slots when labels are given, else ``[b, s, C]``
    (C candidates) at every position: the caller knows where its mask is.
    """

    def __init__(
        self,
        hidden_size: int,
        embedding_size: int,
        vocab_size: int,
        word_ids: list[int] | None = None,
        activation: str = "gelu",
        norm: str = "layernorm",
        norm_eps: float = 1e-12,
    ):
        super().__init__(hidden_size, embedding_size, vocab_size, activation, norm, norm_eps)
        ids = list(word_ids or [])
        bad = [i for i in ids if isinstance(i, bool) or not isinstance(i, int)]
        if bad or any(not 0 <= i < vocab_size for i in ids):
            raise ConfigError(f"word_ids must be ids below the vocab size {vocab_size}, got {ids}")
        if len(set(ids)) != len(ids):
            raise ConfigError(f"word_ids must be distinct, got {ids}")
        if len(ids) == 1:
            raise ConfigError("word_ids: a cloze head needs at least two candidate words")
        self.word_ids = ids
        self.candidates: torch.Tensor
        # Not saved: it is config (word_ids), and a buffer would add a key the mlm head lacks.
        self.register_buffer("candidates", torch.tensor(ids, dtype=torch.long), persistent=False)

    def scores(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """``[..., h]`` → the candidates' MLM logits ``[..., C]``."""
        x = self.norm(self.act(self.dense(hidden_states)))
        if not self.word_ids:
            return self.decoder(x)
        # Only the candidates' rows of the vocabulary projection: C dot products, not V.
        weight = self.decoder.weight[self.candidates]  # [C, e]
        bias = self.decoder.bias[self.candidates] if self.decoder.bias is not None else None
        return F.linear(x, weight, bias)

    def forward(self, hidden_states, attention_mask, labels) -> TargetOutput:
        if labels is None:
            return TargetOutput(None, self.scores(hidden_states))  # [b, s, C]
        keep = labels != -100
        logits = self.scores(hidden_states[keep])  # [n, C]
        gold = labels[keep]  # [n] vocabulary ids
        if self.word_ids:
            match = gold[:, None] == self.candidates[None, :]  # [n, C]
            if not bool(match.any(-1).all()):
                raise ValueError("cloze: a gold word at a mask slot is not one of word_ids")
            gold = match.long().argmax(-1)
        loss = F.cross_entropy(logits.float(), gold) if gold.numel() else logits.sum() * 0
        return TargetOutput(loss, logits, {"accuracy": accuracy(logits.detach(), gold)})
