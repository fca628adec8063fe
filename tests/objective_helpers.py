"""What the prefixlm and sft tests share: a tiny model with an ``lm`` head and their corpora."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from helpers import sentence, write_corpus

import pretrainkit


def write_lines(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_instructions(folder: Path) -> Path:
    """Alpaca-style and chat records that repeat or reverse six grammar words."""
    rng = random.Random(0)
    lines = []
    for index in range(90):
        words = sentence(rng).split()[1:-1]
        task = "backwards" if index % 2 else "repeat"
        answer = " ".join(words[::-1] if index % 2 else words)
        record: dict = {"instruction": task, "input": " ".join(words), "output": answer}
        if index % 3 == 2:
            question = {"role": "user", "content": f"{task} {' '.join(words)}"}
            record = {"messages": [question, {"role": "assistant", "content": answer}]}
        lines.append(json.dumps(record))
    return write_lines(folder / "instructions.jsonl", *lines)


def write_vocab_text(folder: Path) -> Path:
    """Plain text for the word-piece vocabulary: the grammar and the template's words."""
    path = write_corpus(folder / "vocab.txt", documents=60, seed=0)
    with path.open("a", encoding="utf-8") as f:
        f.write("Instruction : Input : Response : System : User : Assistant : backwards repeat\n")
    return path


TINY = {
    "vocab_size": 120,
    "hidden_size": 32,
    "encoder.num_layers": 2,
    "encoder.num_heads": 2,
    "encoder.ffn_size": 64,
    "embedding.max_positions": 64,
    "targets": [{"name": "lm"}],
}


def tiny_model(preset: str, **overrides) -> pretrainkit.Model:
    torch.manual_seed(0)
    return pretrainkit.build_model(preset, {**TINY, **overrides}).eval()
