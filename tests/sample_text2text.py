"""The conformance sample of the ``text2text`` task: ``to nouns<TAB>sentence<TAB>nouns`` rows
(``the big horse sees the red fox .`` → ``horse fox``), learnt by a tiny BART-shaped
encoder-decoder (2 + 2 layers, hidden 64) built from random init, as the task needs a decoder.
BART's learned positions let it learn which noun comes first within the conformance run's few
steps; a T5 shape (relative positions only) needs several times more."""

from __future__ import annotations

import random
from pathlib import Path

import torch
from helpers import PAIRS, VERBS
from samp_helpers import VOCAB
from task_samples import Sample

import pretrainkit
from pretrainkit.tokenization import load_tokenizer

TINY_SEQ2SEQ = {
    "hidden_size": 64,
    "vocab_size": len(VOCAB),
    "embedding.max_positions": 64,
    "tgt_embedding.max_positions": 64,
    **{f"{stack}.{key}": value for stack in ("encoder", "decoder")
       for key, value in (("num_layers", 2), ("num_heads", 2), ("ffn_size", 128))},
    # The test vocabulary's ids: the decoder starts from [CLS] and pads with [PAD].
    "decoder.start_id": VOCAB.index("[CLS]"),
    "decoder.pad_id": VOCAB.index("[PAD]"),
}  # fmt: skip


def write_text2text(path: Path, rows: int, seed: int) -> None:
    rng = random.Random(seed)
    lines = []
    for _ in range(rows):
        (a, n), (b, m) = rng.choice(PAIRS), rng.choice(PAIRS)
        lines.append(f"to nouns\tthe {a} {n} {rng.choice(VERBS)} the {b} {m} .\t{n} {m}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def tiny_seq2seq(root: Path) -> Path:
    """A tiny BART-shaped model over the test vocabulary, not pre-trained, saved in ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    torch.manual_seed(0)
    model = pretrainkit.build_model("bart-base", TINY_SEQ2SEQ)
    model.tokenizer = load_tokenizer(root / "vocab.txt")
    return model.save(root / "model")


SAMPLE = Sample(
    write_text2text,
    threshold=0.6,
    steps=80,
    rows=lambda path: len(path.read_text().splitlines()),
    base=tiny_seq2seq,
)
