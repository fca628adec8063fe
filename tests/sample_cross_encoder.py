"""Conformance sample of the ``cross_encoder`` task: the siamese sample's pairs."""

from __future__ import annotations

from pathlib import Path

# A module import, looked up at call time: task_samples imports every sample, so importing
# sample_siamese first would find this module while sample_siamese is still half-initialised.
import sample_siamese
from task_samples import Sample


def write_pairs(path: Path, rows: int, seed: int) -> None:
    sample_siamese.write_perspective_pairs(path, rows, seed)


# Comparing tokens across the two segments takes a cross-encoder from scratch longer to learn
# than the bi-encoder, whose cosine compares the texts by construction.
SAMPLE = Sample(write_pairs, threshold=0.8, steps=400)
