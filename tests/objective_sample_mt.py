"""Conformance sample of the ``mt`` objective: a tiny T5-shaped model learns to write each
grammar sentence's words backwards (``source<TAB>target`` lines)."""

import random
from pathlib import Path

from helpers import sentence
from objective_samples import ObjectiveSample

# Samples import only objective_samples (which imports every sample), never each other.
SEQ2SEQ_BODY = {
    "encoder.num_layers": 2,
    "encoder.head_dim": 32,
    "decoder.num_layers": 2,
    "decoder.num_heads": 2,
    "decoder.head_dim": 32,
    "decoder.ffn_size": 128,
    "tgt_embedding.max_positions": 64,
}


def write_parallel(folder: Path) -> Path:
    rng = random.Random(0)
    lines = []
    for _ in range(200):
        words = sentence(rng).split()
        lines.append(" ".join(words) + "\t" + " ".join(reversed(words)))
    path = folder / "parallel.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


SAMPLE = ObjectiveSample("t5-small", SEQ2SEQ_BODY, write_corpus=write_parallel)
