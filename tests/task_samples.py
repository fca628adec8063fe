"""A tiny learnable sample file for every registered task, for the conformance test.

Every task in ``pretrainkit.tasks.TASKS`` must have a sample (the conformance test fails
otherwise): a writer ``(path, rows, seed) -> None`` and the value of the task's first metric
that a tiny model must beat after a few dozen steps (a chance-level model does not). A task
added in its own file brings its sample in ``tests/sample_<task>.py`` (``SAMPLE = Sample(...)``),
found here by name, so adding a task touches no shared test file.
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from helpers import NEGATIVE, POSITIVE, sentence, write_classification


@dataclass
class Sample:
    write: Callable[[Path, int, int], None]
    threshold: float
    """The task's first metric on the dev sample must exceed this."""
    suffix: str = ".tsv"
    steps: int = 60
    """Training steps of the conformance run (batch 16, lr 3e-3, tiny BERT)."""
    options: dict = field(default_factory=dict)
    """Task options of the conformance run (besides seq_length 32)."""
    rows: Callable[[Path], int] = lambda path: len(path.read_text().splitlines()) - 1
    """The number of rows ``evaluate`` reports for a written file (default: lines - header)."""
    prediction_rows: Callable[[Path], int] | None = None
    """Lines after the header of the prediction file (default: ``rows``)."""
    base: Callable[[Path], Path] | None = None
    """Writes the base model folder the task fine-tunes, under the given folder, and returns
    it (default None: the shared tiny encoder); e.g. a seq2seq model for text2text."""

    def __post_init__(self) -> None:
        if self.prediction_rows is None:
            self.prediction_rows = self.rows


def _classification(path: Path, rows: int, seed: int) -> None:
    write_classification(path, rows, seed)


def _regression(path: Path, rows: int, seed: int) -> None:
    """A score that counts the positive cue words (0, 2.5 or 5): learnable from the text."""
    rng = random.Random(seed)
    lines = ["label\ttext_a\ttext_b"]
    for _ in range(rows):
        cues = [rng.choice(POSITIVE + NEGATIVE) for _ in range(2)]
        score = 2.5 * sum(c in POSITIVE for c in cues)
        lines.append(f"{score}\t{sentence(rng)[:-2]} and it was {cues[0]} .\tit was {cues[1]} .")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


SAMPLES: dict[str, Sample] = {
    "classification": Sample(_classification, threshold=0.8),
    "regression": Sample(_regression, threshold=0.6),
}
for _module in sorted(Path(__file__).parent.glob("sample_*.py")):
    SAMPLES[_module.stem.removeprefix("sample_")] = importlib.import_module(_module.stem).SAMPLE
