"""The conformance sample of ``tagging``: a learnable synthetic NER over the shared tiny
vocabulary. Animals are ANI entities and people PER, one word (``horse``: B-ANI) or two with
their adjective (``big horse``: B-ANI I-ANI), so a tag depends on the word and on the one before
it. The conformance run uses the CRF head (its transitions must survive save and reload)."""

from __future__ import annotations

import random
from pathlib import Path

from helpers import NEGATIVE, PAIRS, POSITIVE, VERBS
from task_samples import Sample

KINDS = {
    "horse": "ANI",
    "mouse": "ANI",
    "fox": "ANI",
    "owl": "ANI",
    "farmer": "PER",
    "child": "PER",
}


def _mention(rng: random.Random) -> tuple[list[str], list[str]]:
    adjective, noun = rng.choice(PAIRS)
    kind = KINDS[noun]
    if rng.random() < 0.5:
        return [noun], [f"B-{kind}"]
    return [adjective, noun], [f"B-{kind}", f"I-{kind}"]


def tagged_sentence(rng: random.Random) -> tuple[list[str], list[str]]:
    """``the MENTION VERB the MENTION .`` (sometimes ``and it was CUE .`` after it)."""
    subject, subject_tags = _mention(rng)
    obj, obj_tags = _mention(rng)
    words = ["the", *subject, rng.choice(VERBS), "the", *obj, "."]
    tags = ["O", *subject_tags, "O", "O", *obj_tags, "O"]
    if rng.random() < 0.3:
        words[-1:] = ["and", "it", "was", rng.choice(POSITIVE + NEGATIVE), "."]
        tags[-1:] = ["O"] * 5
    return words, tags


def write_tagging(path: Path, rows: int, seed: int) -> None:
    rng = random.Random(seed)
    lines = ["text_a\tlabel"]
    for _ in range(rows):
        words, tags = tagged_sentence(rng)
        lines.append(f"{' '.join(words)}\t{' '.join(tags)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


SAMPLE = Sample(write_tagging, threshold=0.8, options={"crf": True})
