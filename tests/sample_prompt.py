"""Conformance sample of the ``prompt`` task: the cue-word sentiment file asked as a cloze
question whose label words are in the tiny vocabulary."""

from __future__ import annotations

from pathlib import Path

from helpers import write_classification
from task_samples import Sample


def write_prompt(path: Path, rows: int, seed: int) -> None:
    write_classification(path, rows, seed)


SAMPLE = Sample(
    write_prompt,
    threshold=0.8,
    options={"template": "{text_a} it was {mask} .", "label_words": "0:bad,1:good"},
)
