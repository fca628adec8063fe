"""A tiny model and corpus for every registered pre-training objective, for the conformance test.

Every objective in ``pretrainkit.data.objectives.OBJECTIVES`` must have a sample (the
conformance test fails otherwise). An objective added in its own file brings its sample in
``tests/objective_sample_<name>.py`` (``SAMPLE = ObjectiveSample(...)``), found here by name, so
adding an objective touches no shared test file.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from helpers import write_corpus


def _plain_corpus(path: Path) -> Path:
    return write_corpus(path / "corpus.txt", documents=60, seed=0)


@dataclass
class ObjectiveSample:
    preset: str
    """The preset the tiny model starts from (``TINY_BODY`` of the test shrinks it)."""
    overrides: dict = field(default_factory=dict)
    """Model overrides on top of the tiny body (the targets come from the objective)."""
    write_corpus: Callable[[Path], Path] = _plain_corpus
    """Writes the corpus into the given folder and returns its path."""
    vocab_corpus: Callable[[Path], Path] | None = None
    """The text a word-piece vocabulary is trained on (default: the corpus itself)."""
    seq_length: int = 32
    loss_ratio: float = 0.8
    objective_options: dict = field(default_factory=dict)
    """Options of the objective given to preprocess (an image objective's image size)."""
    """The last logged loss must be below this share of the first."""


_DECODER_ONLY = {"encoder.num_layers": 2, "encoder.num_heads": 2}

SAMPLES: dict[str, ObjectiveSample] = {
    "mlm": ObjectiveSample("bert-tiny"),
    "bert": ObjectiveSample("bert-tiny"),
    "albert": ObjectiveSample("bert-tiny"),
    "lm": ObjectiveSample("gpt2-small", _DECODER_ONLY),
}
for _module in sorted(Path(__file__).parent.glob("objective_sample_*.py")):
    _name = _module.stem.removeprefix("objective_sample_")
    SAMPLES[_name] = importlib.import_module(_module.stem).SAMPLE
