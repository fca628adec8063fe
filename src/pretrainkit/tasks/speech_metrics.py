"""Transcript metrics: word and character error rates over Levenshtein alignments, and word
accuracy (the share of transcripts produced exactly)."""

from __future__ import annotations

from collections.abc import Sequence


def edit_distance(reference: Sequence[object], hypothesis: Sequence[object]) -> int:
    """The fewest substitutions, deletions and insertions that turn ``reference`` into
    ``hypothesis`` (Levenshtein), in O(len(reference) * len(hypothesis)) time and a row of
    memory."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_item in enumerate(reference, start=1):
        current = [i] + [0] * len(hypothesis)
        for j, hyp_item in enumerate(hypothesis, start=1):
            current[j] = min(
                previous[j] + 1,  # deletion
                current[j - 1] + 1,  # insertion
                previous[j - 1] + (ref_item != hyp_item),  # substitution or match
            )
        previous = current
    return previous[-1]


def _normalise(text: str) -> str:
    return " ".join(text.split())  # runs of whitespace count once; no case folding


def error_rate(
    references: Sequence[Sequence[object]], hypotheses: Sequence[Sequence[object]]
) -> float:
    """Total edits over total reference length, pooled over the corpus (as jiwer and sclite
    compute it, not a mean of per-utterance rates); 0 for an empty corpus."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    edits = sum(edit_distance(r, h) for r, h in zip(references, hypotheses))
    total = sum(len(r) for r in references)
    if total == 0:
        return 0.0 if edits == 0 else float("inf")
    return edits / total


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """WER: edits between the whitespace-separated words, over the reference words."""
    return error_rate([r.split() for r in references], [h.split() for h in hypotheses])


def character_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """CER: edits between the characters (whitespace runs as one space, spaces counted), over
    the reference characters."""
    return error_rate([_normalise(r) for r in references], [_normalise(h) for h in hypotheses])


def word_accuracy(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """The share of transcripts produced exactly (after collapsing whitespace)."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    if not references:
        return 0.0
    same = sum(_normalise(r) == _normalise(h) for r, h in zip(references, hypotheses))
    return same / len(references)


def transcript_metrics(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, float]:
    """``word_accuracy``, ``wer`` and ``cer`` of ``hypotheses`` against ``references``."""
    return {
        "word_accuracy": word_accuracy(references, hypotheses),
        "wer": word_error_rate(references, hypotheses),
        "cer": character_error_rate(references, hypotheses),
    }
