"""Conformance sample of the ``multi_label`` task: the labels are the nouns a sentence names."""

from __future__ import annotations

import random
from pathlib import Path

from helpers import PAIRS, sentence
from task_samples import Sample

NOUNS = [noun for _, noun in PAIRS]


def write_multi_label(path: Path, rows: int, seed: int) -> None:
    """``labels<TAB>text_a``: the one or two nouns of a grammar sentence; one row in eight is a
    sentence without a noun, whose labels field is empty."""
    rng = random.Random(seed)
    lines = ["labels\ttext_a"]
    for _ in range(rows):
        if rng.random() < 0.125:
            lines.append(f"\tit was {rng.choice(['good', 'bad', 'great', 'awful'])} .")
            continue
        text = sentence(rng)
        found = sorted({noun for noun in NOUNS if f" {noun} " in f" {text} "})
        lines.append(f"{','.join(found)}\t{text}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# Six sigmoids from a random init need more steps than one softmax to leave the label prior.
SAMPLE = Sample(write_multi_label, threshold=0.7, steps=150)
