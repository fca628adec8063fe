"""Conformance sample of ``multiple_choice``: C3-style JSON where the answer is the one choice
that shares a word with the question (learnable by matching tokens inside the first segment),
2 to 4 choices per question so that padding choices are exercised, 1 or 2 questions per
document."""

from __future__ import annotations

import json
import random
from pathlib import Path

from helpers import PAIRS, sentence
from task_samples import Sample

NOUNS = [noun for _, noun in PAIRS]


def write_multiple_choice(path: Path, rows: int, seed: int) -> None:
    """``rows`` questions: "the ADJ NOUN ." asks which noun it names; the other choices are
    other nouns, in random order."""
    rng = random.Random(seed)
    documents: list[list] = []
    written = 0
    while written < rows:
        questions = []
        for _ in range(min(rng.randint(1, 2), rows - written)):
            adjective, noun = rng.choice(PAIRS)
            others = rng.sample([n for n in NOUNS if n != noun], rng.randint(1, 3))
            choices = [noun, *others]
            rng.shuffle(choices)
            question = {"question": f"the {adjective} {noun} .", "choice": choices, "answer": noun}
            questions.append(question)
        written += len(questions)
        context = [sentence(rng), sentence(rng)]
        documents.append([context, questions, f"doc-{len(documents)}"])
    path.write_text(json.dumps(documents, indent=1) + "\n", encoding="utf-8")


def questions_in(path: Path) -> int:
    return sum(len(document[1]) for document in json.loads(path.read_text(encoding="utf-8")))


SAMPLE = Sample(
    write_multiple_choice,
    threshold=0.8,  # chance: about 0.44 (mean 1 / choices)
    suffix=".json",
    # The conformance batch of 16 is 16 questions (up to 64 sequences). Max pooling learns the
    # token match at its lr (3e-3) in 45 steps on every data seed tried (1, 3, 5, 7: accuracy
    # 1.0 at 45, 60 and 80 steps); mean and [CLS] pooling stayed at chance for 300 steps of 4
    # questions.
    steps=60,
    options={"pooling": "max"},
    rows=questions_in,
)
