"""A tiny trained classifier and its task files, shared by the SAMP tests; and what a test
that needs an optional part does when it is missing: skip, or fail in CI."""

from __future__ import annotations

import random
from pathlib import Path
from types import ModuleType

import torch
from helpers import NEGATIVE, PAIRS, POSITIVE, VERBS, unavailable, write_classification

import pretrainkit
from pretrainkit.model import Model
from pretrainkit.tasks.tsv import classification_batches, read_classification_tsv
from pretrainkit.tokenization import load_tokenizer

WORDS = sorted({w for pair in PAIRS for w in pair} | set(VERBS) | set(POSITIVE + NEGATIVE))
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "and", "it", "was", ".", *WORDS]
TINY = {
    "hidden_size": 64,
    "encoder.num_layers": 2,
    "encoder.num_heads": 2,
    "encoder.ffn_size": 128,
    "embedding.max_positions": 64,
    "vocab_size": len(VOCAB),
}


def tiny_classifier(root: Path, steps: int = 60, seed: int = 0) -> tuple[Model, dict[str, Path]]:
    """A 2-layer, hidden-64 BERT trained for ``steps`` on the cue-word task, and its splits
    (calib, select, report: disjoint files of 64 rows; select and report have 1 row in 8 with a
    flipped label, so no model scores 100)."""
    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n")
    files = {}
    for i, name in enumerate(("train", "calib", "select", "report")):
        files[name] = root / f"{name}.tsv"
        rows = 256 if name == "train" else 64
        write_classification(files[name], rows, seed=seed + i, flip_every=0 if i < 2 else 8)
    torch.manual_seed(seed)
    targets = [{"name": "classification", "options": {"labels": ["0", "1"], "pooling": "mean"}}]
    model = pretrainkit.build_model("bert-tiny", {**TINY, "targets": targets})
    model.tokenizer = load_tokenizer(vocab)
    data = read_classification_tsv(files["train"])
    batches = list(classification_batches(data, model.tokenizer, ["0", "1"], 32, 32))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = random.Random(seed)
    model.train()
    for _ in range(steps):
        loss = model(**rng.choice(batches)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), files


def require_fused_kernels() -> ModuleType:
    """SAMP's compiled kernels, or skip the test when they did not build (a failure under
    ``strict()``, with the build's reason). Library code keeps its fallback (``--kernel auto``
    warns and uses fbgemm); only the tests that need the kernels are strict."""
    from pretrainkit.samp import fused

    if not fused.available():
        unavailable(f"SAMP's fused kernels did not build: {fused.reason()}")
    return fused.kernels()
