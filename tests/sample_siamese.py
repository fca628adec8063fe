"""Conformance sample of the ``siamese`` task: MPTS-style pairs of short sentences, similar
under "animal" when both name the same animal and under "mood" when both cues agree."""

from __future__ import annotations

import random
from pathlib import Path

from helpers import NEGATIVE, PAIRS, POSITIVE
from task_samples import Sample

ANIMALS = PAIRS[:3]  # few, so that a tiny cross-encoder learns to compare them in 400 steps
PERSPECTIVES = ("animal", "mood")


def _text(rng: random.Random, animal: tuple[str, str], positive: bool) -> str:
    cue = rng.choice(POSITIVE[:1] if positive else NEGATIVE[:1])
    return f"the {animal[0]} {animal[1]} was {cue} ."


def write_perspective_pairs(path: Path, rows: int, seed: int) -> None:
    """``id texta textb animal mood`` rows: half of the pairs share their animal, half their
    mood; "not similar" is written -1 or 0 at random, as MPTS does."""
    rng = random.Random(seed)
    lines = ["id\ttexta\ttextb\t" + "\t".join(PERSPECTIVES)]
    for row in range(rows):
        first, mood = rng.choice(ANIMALS), rng.random() < 0.5
        same_animal, same_mood = rng.random() < 0.5, rng.random() < 0.5
        second = first if same_animal else rng.choice([a for a in ANIMALS if a != first])
        other_mood = mood if same_mood else not mood
        values = [1 if same else rng.choice([-1, 0]) for same in (same_animal, same_mood)]
        lines.append(
            f"{seed}_{row}\t{_text(rng, first, mood)}\t{_text(rng, second, other_mood)}\t"
            + "\t".join(map(str, values))
        )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# Cosines over two perspectives from a random init need more steps than one softmax.
SAMPLE = Sample(write_perspective_pairs, threshold=0.85, steps=150)
