"""``crf``: a linear-chain conditional random field over the tokens, for BIO tagging.

Emission scores come from a linear layer as in ``token_classification``; the CRF adds a learned
transition matrix and start / end scores. Transitions that BIO forbids (``I-X`` after anything
but ``B-X`` or ``I-X``, and ``I-X`` first) are impossible, so no decoded path breaks BIO.

Positions whose label is -100 ([CLS], [SEP], a word's later pieces) are unobserved states: the
loss sums over every tag they could take, ``-log p(observed tags) = log Z - log Z(observed)``,
normalised by the number of observed tags so that the loss (and the learning rate that suits it)
is on the per-token scale of the softmax head's cross-entropy.

The logits are max-marginals: for each token and tag, the score of the best whole path that
gives the token that tag. Their argmax at each token is the Viterbi path (the best path passes
through every one of its tags), so a task decodes by argmax, as for the softmax head, and their
softmax stays a meaningful score for SAMP's divergence.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from pretrainkit.errors import ConfigError
from pretrainkit.targets.base import TARGETS, Target, TargetOutput, accuracy

IGNORE = -100

IMPOSSIBLE = -1e30
"""The score of a forbidden start or transition. It acts as -inf: against any allowed path
``exp(IMPOSSIBLE - score)`` is exactly 0 in float32 and float64, and an allowed path always
exists (all ``O``). A real -inf would make the forward recursion take the log-sum-exp of a row
that is all -inf where observed tags pin a state, whose gradient is NaN."""

Reduce = Callable[[torch.Tensor, int], torch.Tensor]


def bio_constraints(labels: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Which starts and transitions BIO forbids: ``(start [L], transition [L, L])`` booleans,
    ``transition[i, j]`` for tag j right after tag i. Tags other than ``B-``/``I-`` (``O``, or
    a set that is not BIO) are unconstrained."""
    size = len(labels)
    start = torch.zeros(size, dtype=torch.bool)
    transition = torch.zeros(size, size, dtype=torch.bool)
    for j, tag in enumerate(labels):
        if tag.startswith("I-"):
            start[j] = True
            kind = tag[2:]
            for i, before in enumerate(labels):
                transition[i, j] = before not in (f"B-{kind}", f"I-{kind}")
    return start, transition


def _alphas(
    emissions: torch.Tensor,
    mask: torch.Tensor,
    start: torch.Tensor,
    transitions: torch.Tensor,
    reduce: Reduce,
) -> list[torch.Tensor]:
    """The forward recursion: ``alpha[t][b, j]`` reduces over the paths that end at token t
    with tag j. A masked token is skipped: its alpha is the one before it."""
    alpha = start + emissions[:, 0]  # [b, L]
    alphas = [alpha]
    for t in range(1, emissions.shape[1]):
        step = reduce(alpha.unsqueeze(2) + transitions, 1) + emissions[:, t]  # [b, L]
        alpha = torch.where(mask[:, t].unsqueeze(1), step, alpha)
        alphas.append(alpha)
    return alphas


def _logsumexp(x: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.logsumexp(x, dim)


def _amax(x: torch.Tensor, dim: int) -> torch.Tensor:
    return x.amax(dim)


def _check_mask(emissions: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return torch.ones(emissions.shape[:2], dtype=torch.bool, device=emissions.device)
    mask = mask.bool()
    # The recursion starts at token 0; right padding (collate's) always keeps it.
    if emissions.shape[1] == 0 or not bool(mask[:, 0].all()):
        raise ValueError("crf: every row needs its first token unmasked (right padding)")
    return mask


def log_partition(
    emissions: torch.Tensor,
    mask: torch.Tensor | None,
    start: torch.Tensor,
    transitions: torch.Tensor,
    end: torch.Tensor,
) -> torch.Tensor:
    """``log Z`` of each row ``[b]``: the log-sum-exp of the scores of every tag path.

    Args:
        emissions: ``[b, s, L]`` per-token tag scores (an impossible tag: ``IMPOSSIBLE``).
        mask: ``[b, s]``, true for real tokens; None = all real.
        start, transitions, end: ``[L]``, ``[L, L]`` (``[from, to]``), ``[L]`` scores.
    """
    mask = _check_mask(emissions, mask)
    alpha = _alphas(emissions, mask, start, transitions, _logsumexp)[-1]
    return torch.logsumexp(alpha + end, dim=-1)


def max_marginals(
    emissions: torch.Tensor,
    mask: torch.Tensor | None,
    start: torch.Tensor,
    transitions: torch.Tensor,
    end: torch.Tensor,
) -> torch.Tensor:
    """``[b, s, L]``: for every token and tag, the best score of a whole path through it.

    Masked tokens (padding) carry the values of the last real token's neighbourhood and mean
    nothing. Arguments as in ``log_partition``.
    """
    mask = _check_mask(emissions, mask)
    alphas = _alphas(emissions, mask, start, transitions, _amax)
    beta = end.expand(emissions.shape[0], -1)  # [b, L]: the best score after the last token
    betas = [beta]
    for t in range(emissions.shape[1] - 1, 0, -1):
        following = (transitions + (emissions[:, t] + beta).unsqueeze(1)).amax(-1)  # [b, L]
        beta = torch.where(mask[:, t].unsqueeze(1), following, beta)
        betas.append(beta)
    return torch.stack(alphas, 1) + torch.stack(betas[::-1], 1)


def viterbi(
    emissions: torch.Tensor,
    mask: torch.Tensor | None,
    start: torch.Tensor,
    transitions: torch.Tensor,
    end: torch.Tensor,
) -> list[list[int]]:
    """The best tag path of each row, over its unmasked tokens (by back-pointers; the argmax of
    ``max_marginals`` gives the same path unless two paths score exactly the same)."""
    mask = _check_mask(emissions, mask)
    size = emissions.shape[-1]
    keep = torch.arange(size, device=emissions.device).expand(emissions.shape[0], -1)
    score = start + emissions[:, 0]
    pointers = []
    for t in range(1, emissions.shape[1]):
        best, before = (score.unsqueeze(2) + transitions).max(1)  # [b, L] each
        real = mask[:, t].unsqueeze(1)
        score = torch.where(real, best + emissions[:, t], score)
        pointers.append(torch.where(real, before, keep))  # a skipped token keeps its tag
    tag = (score + end).argmax(-1)  # [b]
    path = [tag]
    for before in reversed(pointers):
        tag = before.gather(1, tag.unsqueeze(1)).squeeze(1)
        path.append(tag)
    tags = torch.stack(path[::-1], 1)  # [b, s]
    return [row[real].tolist() for row, real in zip(tags, mask)]


@TARGETS.register("crf")
class CRFTarget(Target):
    """Dropout → linear emissions → a BIO-constrained linear-chain CRF (see the module doc).

    Labels are ``[b, s]`` tag indices with -100 where no tag is observed, as for
    ``token_classification``. The CRF runs in float32 whatever the autocast.

    Args:
        hidden_size: encoder width.
        labels: the tag strings in class-index order (kept with the model); ``I-X`` tags get
            the BIO constraints.
        dropout: before the emission layer.
    """

    forbidden_start: torch.Tensor
    forbidden_transitions: torch.Tensor

    def __init__(self, hidden_size: int, labels: list[str], dropout: float = 0.1):
        super().__init__()
        if len(labels) < 2:
            raise ConfigError(f"labels: a tagger needs at least two labels, got {labels!r}")
        self.labels = [str(label) for label in labels]
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, len(labels))
        size = len(labels)
        self.start_scores = nn.Parameter(torch.zeros(size))
        self.transitions = nn.Parameter(torch.zeros(size, size))  # [from, to]
        self.end_scores = nn.Parameter(torch.zeros(size))
        start, transition = bio_constraints(self.labels)
        # Derived from the labels, so not saved: a checkpoint holds only learned values.
        self.register_buffer("forbidden_start", start, persistent=False)
        self.register_buffer("forbidden_transitions", transition, persistent=False)

    def scores(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Start, transition and end scores in float32, the forbidden ones ``IMPOSSIBLE``."""
        start = self.start_scores.float().masked_fill(self.forbidden_start, IMPOSSIBLE)
        transitions = self.transitions.float().masked_fill(self.forbidden_transitions, IMPOSSIBLE)
        return start, transitions, self.end_scores.float()

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        labels: torch.Tensor | None,
    ) -> TargetOutput:
        emissions = self.classifier(self.dropout(hidden_states))  # [b, s, L]
        with torch.autocast(emissions.device.type, enabled=False):
            emissions = emissions.float()
            mask = _check_mask(emissions, attention_mask)
            start, transitions, end = self.scores()
            with torch.no_grad():
                logits = max_marginals(emissions, mask, start, transitions, end)
            if labels is None:
                return TargetOutput(None, logits)
            observed = (labels != IGNORE) & mask  # [b, s]
            gold = torch.nn.functional.one_hot(labels.clamp(min=0), emissions.shape[-1]).bool()
            allowed = gold | ~observed.unsqueeze(-1)  # an unobserved token may take any tag
            pinned = emissions.masked_fill(~allowed, IMPOSSIBLE)
            nll = log_partition(emissions, mask, start, transitions, end) - log_partition(
                pinned, mask, start, transitions, end
            )
            loss = nll.sum() / observed.sum().clamp(min=1)
        return TargetOutput(loss, logits, {"token_accuracy": accuracy(logits, labels, IGNORE)})
