"""Dynamic masking for masked-language-model targets (BERT's 80/10/10 rule)."""

from __future__ import annotations

import numpy as np

IGNORE_INDEX = -100  # label value the loss skips


def mask_tokens(
    input_ids: np.ndarray,
    rng: np.random.Generator,
    mask_id: int,
    vocab_size: int,
    special_ids: np.ndarray,
    mask_prob: float = 0.15,
) -> tuple[np.ndarray, np.ndarray]:
    """Choose `mask_prob` of the non-special tokens and corrupt them for MLM.

    Of the chosen tokens 80% become `mask_id`, 10% a random non-special id and 10% stay as they
    are. The number chosen is `n * mask_prob` rounded up or down at random, so that the expected
    fraction is exact even for short sequences.

    Args:
        input_ids: `[s]` int64 ids; not modified.
        rng: the generator that makes the choice (seeded per instance by the caller).
        mask_id: id of the mask token.
        vocab_size: random replacements are drawn from `[0, vocab_size)`.
        special_ids: sorted, unique ids that are never chosen nor drawn.
        mask_prob: fraction of non-special tokens to choose.

    Returns:
        `(corrupted_ids, labels)`; labels hold the original id where chosen and -100 elsewhere.
    """
    ids = input_ids.copy()
    labels = np.full_like(ids, IGNORE_INDEX)
    candidates = np.flatnonzero(~np.isin(ids, special_ids))
    count = int(candidates.size * mask_prob + rng.random())
    if count == 0:
        return ids, labels
    chosen = rng.choice(candidates, size=min(count, candidates.size), replace=False)
    labels[chosen] = ids[chosen]
    action = rng.random(chosen.size)
    ids[chosen[action < 0.8]] = mask_id
    replaced = chosen[(action >= 0.8) & (action < 0.9)]
    ids[replaced] = random_ordinary_ids(rng, replaced.size, vocab_size, special_ids)
    return ids, labels


def random_ordinary_ids(
    rng: np.random.Generator, size: int, vocab_size: int, special_ids: np.ndarray
) -> np.ndarray:
    """Uniform ids from `[0, vocab_size)` minus `special_ids`, without building the allowed set.

    Draw from the `vocab_size - k` ordinary ids, then shift each past the specials at or
    below it: the j-th special (0-based) is passed when draw >= special[j] - j.
    """
    draws = rng.integers(0, vocab_size - len(special_ids), size=size)
    thresholds = special_ids - np.arange(len(special_ids))
    return draws + np.searchsorted(thresholds, draws, side="right")
