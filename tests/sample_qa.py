"""The conformance sample of the ``qa`` task: SQuAD-format JSON whose answer is the word after
the fixed marker ``was`` (``... and it was lovely .``), among grammar sentences and other cue
words, in a context long enough at ``seq_length`` 32 to need two or three windows, so that
windows without the answer teach "no answer here"."""

from __future__ import annotations

import json
import random
from pathlib import Path

from helpers import NEGATIVE, POSITIVE, sentence
from task_samples import Sample


def write_qa(path: Path, rows: int, seed: int) -> None:
    rng = random.Random(seed)
    paragraphs = []
    for row in range(rows):
        cue = rng.choice(POSITIVE + NEGATIVE)
        sentences = [sentence(rng) for _ in range(rng.randint(2, 4))]
        sentences.insert(rng.randint(0, len(sentences)), f"and it was {cue} .")
        # Cue words elsewhere: the model must find the one after the marker, not any cue word.
        others = rng.sample([c for c in POSITIVE + NEGATIVE if c != cue], 2)
        sentences.insert(rng.randint(0, len(sentences)), f"{others[0]} and {others[1]} .")
        context = " ".join(sentences)
        start = context.index(f"was {cue} .") + len("was ")
        answer = {"text": cue, "answer_start": start}
        question = {"id": f"q{seed}-{row}", "question": "it was", "answers": [answer]}
        paragraphs.append({"context": context, "qas": [question]})
    path.write_text(json.dumps({"version": "sample", "data": [{"paragraphs": paragraphs}]}))


def questions(path: Path) -> int:
    document = json.loads(path.read_text())
    return sum(len(p["qas"]) for a in document["data"] for p in a["paragraphs"])


SAMPLE = Sample(
    write_qa, threshold=0.7, suffix=".json", steps=80, options={"doc_stride": 16}, rows=questions
)
