"""Conformance sample of ``simcse``: scored sentence pairs (a ``label``/``text_a``/``text_b``
TSV) whose score is the share of words ``b`` keeps from ``a``; training reads the same kind of
file and uses its sentences without the scores."""

from __future__ import annotations

import random
from pathlib import Path

from samp_helpers import WORDS
from task_samples import Sample

LENGTH = 6


def write_simcse(path: Path, rows: int, seed: int) -> None:
    """``rows`` pairs: ``a`` is LENGTH random words, ``b`` is ``a`` with ``k`` of them replaced
    by other words (``k`` uniform in 0..LENGTH); the score is 5 x the share kept."""
    rng = random.Random(seed)
    lines = ["label\ttext_a\ttext_b"]
    for _ in range(rows):
        a = [rng.choice(WORDS) for _ in range(LENGTH)]
        b = list(a)
        changed = rng.randint(0, LENGTH)
        for position in rng.sample(range(LENGTH), changed):
            b[position] = rng.choice([w for w in WORDS if w != a[position]])
        score = 5.0 * (LENGTH - changed) / LENGTH
        lines.append(f"{score:.3f}\t{' '.join(a)} .\t{' '.join(b)} .")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


SAMPLE = Sample(
    write_simcse,
    # Honest threshold: on this sample the untrained tiny BERT's mean-pooled cosine already
    # ranks pairs by word overlap (Spearman 0.86-0.93 on data seeds 1, 3, 5, 7, 9), and 60 steps
    # of SimCSE end at 0.89-0.95 (up on seeds 1, 3, 5, down on 7, 9; 120 steps alike). So this
    # checks the path end to end and that training does not collapse the embeddings (a
    # collapsed model ranks at chance, ~0), not that SimCSE improves a random model; the loss
    # falling is checked in test_task_simcse.py.
    threshold=0.8,
    steps=60,
)
