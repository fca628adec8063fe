"""Noising functions of the sequence-to-sequence objectives, pure functions of ids and a seeded
generator: T5 span corruption, BART text infilling and sentence permutation, PEGASUS gap
sentence selection."""

from __future__ import annotations

from collections import Counter

import numpy as np

GAP_STRATEGIES = ("principal", "lead", "random")


def random_partition(total: int, parts: int, rng: np.random.Generator) -> np.ndarray:
    """``parts`` positive integers that sum to ``total``, uniformly over such compositions."""
    if parts == 1:
        return np.asarray([total], dtype=np.int64)
    # parts - 1 distinct cut points in [1, total): the gaps between them are the parts.
    cuts = np.sort(rng.choice(np.arange(1, total), size=parts - 1, replace=False))
    return np.diff(np.concatenate([[0], cuts, [total]])).astype(np.int64)


def span_counts(length: int, noise_density: float, mean_span_length: float) -> tuple[int, int]:
    """(noise tokens, noise spans) that T5's span corruption draws in ``length`` tokens."""
    noise = min(max(int(round(length * noise_density)), 1), length - 1)
    spans = min(max(int(round(noise / mean_span_length)), 1), noise, length - noise)
    return noise, spans


def noise_span_mask(
    length: int, noise_density: float, mean_span_length: float, rng: np.random.Generator
) -> np.ndarray:
    """``[length]`` bool: T5's random spans of noise, ``round(length * density)`` tokens in
    ``round(noise / mean_span_length)`` spans; the sequence starts with kept tokens."""
    noise, spans = span_counts(length, noise_density, mean_span_length)
    noise_lengths = random_partition(noise, spans, rng)
    kept_lengths = random_partition(length - noise, spans, rng)
    # kept, noise, kept, noise, ...: each noise span sits after a kept one.
    interleaved = np.stack([kept_lengths, noise_lengths], axis=1).reshape(-1)
    flags = np.tile([False, True], spans)
    return np.repeat(flags, interleaved)


def span_corruption(
    tokens: np.ndarray,
    rng: np.random.Generator,
    noise_density: float,
    mean_span_length: float,
    sentinel_ids: list[int],
    eos_id: int,
) -> tuple[np.ndarray, np.ndarray]:
    """T5's span corruption of ``tokens`` ``[n]``: ``(source, target)``.

    The source keeps the kept tokens with the i-th noise span replaced by sentinel i; the
    target is ``sentinel_0 span_0 sentinel_1 span_1 ...``; both end with ``eos_id``. Putting the
    target's spans back behind their sentinels restores ``tokens``.
    """
    mask = noise_span_mask(len(tokens), noise_density, mean_span_length, rng)
    starts = mask & ~np.concatenate([[False], mask[:-1]])  # first token of each noise span
    span_index = np.cumsum(starts) - 1  # [n]: the span each noise token belongs to
    sentinels = np.asarray(sentinel_ids, dtype=np.int64)
    if int(starts.sum()) > len(sentinels):
        raise ValueError(f"{int(starts.sum())} spans, but only {len(sentinels)} sentinel ids")
    # Source: each span's first token becomes its sentinel, its other tokens are dropped.
    source = np.where(starts, sentinels[np.maximum(span_index, 0)], tokens)
    source = source[~mask | starts]
    # Target: each span's tokens behind its sentinel.
    target = np.empty(int(mask.sum() + starts.sum()), dtype=np.int64)
    positions = np.flatnonzero(mask)
    # The j-th noise token of span s sits behind s + 1 sentinels.
    target_positions = np.arange(len(positions)) + span_index[positions] + 1
    target[target_positions] = tokens[positions]
    sentinel_positions = np.flatnonzero(starts[positions]) + np.arange(int(starts.sum()))
    target[sentinel_positions] = sentinels[: int(starts.sum())]
    return (
        np.concatenate([source, [eos_id]]).astype(np.int64),
        np.concatenate([target, [eos_id]]).astype(np.int64),
    )


def text_infilling(
    tokens: np.ndarray,
    rng: np.random.Generator,
    mask_ratio: float,
    poisson_lambda: float,
    mask_id: int,
) -> tuple[np.ndarray, np.ndarray]:
    """BART's text infilling of ``tokens`` ``[n]``: ``(source, span_lengths)``.

    ``ceil(n * mask_ratio)`` tokens are removed in spans whose lengths are drawn from
    Poisson(``poisson_lambda``) (the last one cut to fit); each span, a length-0 one included
    (an insertion), is replaced by one ``mask_id``. Spans never touch, so the source holds exactly
    one mask per span. Spans are placed on tokens, not whole words.
    """
    length = len(tokens)
    to_mask = min(int(np.ceil(length * mask_ratio)), length)
    lengths: list[int] = []
    drawn = 0
    while drawn < to_mask:
        span = int(rng.poisson(poisson_lambda))
        span = min(span, to_mask - drawn)
        lengths.append(span)
        drawn += span
    # Insertions beyond the masked count would make the source longer than the text.
    while len(lengths) > max(to_mask, 1) and 0 in lengths:
        lengths.remove(0)
    kept = length - to_mask
    # Spans must be separated by a kept token; with too few kept tokens the extra
    # (length-0) insertions are dropped first, then spans merge into their neighbour.
    while len(lengths) > kept + 1:
        zero = lengths.index(0) if 0 in lengths else None
        if zero is not None:
            lengths.pop(zero)
        else:
            last = lengths.pop()
            lengths[-1] += last
    if not lengths:
        return tokens.copy(), np.zeros(0, dtype=np.int64)
    order = rng.permutation(len(lengths))
    span_lengths = np.asarray(lengths, dtype=np.int64)[order]
    gaps = _gaps(kept, len(span_lengths), rng)  # kept tokens before, between and after spans
    pieces: list[np.ndarray] = []
    position = 0
    for gap, span in zip(gaps[:-1], span_lengths):
        pieces.append(tokens[position : position + gap])
        pieces.append(np.asarray([mask_id], dtype=np.int64))
        position += int(gap + span)
    pieces.append(tokens[position:])
    return np.concatenate(pieces).astype(np.int64), span_lengths


def _gaps(kept: int, spans: int, rng: np.random.Generator) -> np.ndarray:
    """``spans + 1`` gap sizes summing to ``kept``; the inner ones at least 1."""
    # Lend one token to each inner gap, split the rest over all gaps with stars and bars.
    free = kept - (spans - 1)
    bars = np.sort(rng.choice(free + spans, size=spans, replace=False))
    sizes = np.diff(np.concatenate([[-1], bars, [free + spans]])) - 1
    sizes[1:-1] += 1
    return sizes.astype(np.int64)


def permute_sentences(
    sentences: list[np.ndarray], rng: np.random.Generator
) -> tuple[list[np.ndarray], np.ndarray]:
    """BART's sentence permutation: the sentences in a random order, and that order."""
    order = rng.permutation(len(sentences))
    return [sentences[i] for i in order], order


def rouge1_f(candidate: np.ndarray | list[int], reference: np.ndarray | list[int]) -> float:
    """ROUGE-1 F1 of two id sequences (clipped unigram overlap)."""
    if len(candidate) == 0 or len(reference) == 0:
        return 0.0
    overlap = sum(
        (Counter(np.asarray(candidate).tolist()) & Counter(np.asarray(reference).tolist())).values()
    )
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(candidate), overlap / len(reference)
    return 2 * precision * recall / (precision + recall)


def gap_sentence_count(num_sentences: int, ratio: float) -> int:
    """How many of ``num_sentences`` become gap sentences: ``round(n * ratio)``, at least 1."""
    return min(max(int(round(num_sentences * ratio)), 1), num_sentences)


def select_gap_sentences(
    sentences: list[np.ndarray], count: int, strategy: str, rng: np.random.Generator
) -> np.ndarray:
    """Sorted indices of the ``count`` gap sentences.

    ``principal``: the top ``count`` by ROUGE-1 F1 against the rest of the text (PEGASUS's
    Ind-Orig; ties go to the earlier sentence); ``lead``: the first ones; ``random``: a uniform
    choice.
    """
    if strategy == "lead":
        return np.arange(count)
    if strategy == "random":
        return np.sort(rng.choice(len(sentences), size=count, replace=False))
    if strategy != "principal":
        raise ValueError(f"unknown gap sentence strategy {strategy!r}")
    empty = np.zeros(0, dtype=np.int64)
    scores = [
        rouge1_f(sentence, np.concatenate([empty, *sentences[:i], *sentences[i + 1 :]]))
        for i, sentence in enumerate(sentences)
    ]
    # Stable sort on the negated score keeps the earlier of equal sentences.
    return np.sort(np.argsort(-np.asarray(scores), kind="stable")[:count])
