"""Conformance sample of the ``sft`` objective: a tiny decoder-only model learns to answer
instructions (write a grammar sentence backwards, or repeat it), given as Alpaca-style records
and as chat turns, several packed into each window."""

import json
import random
from pathlib import Path

from helpers import sentence, write_corpus
from objective_samples import ObjectiveSample

TEMPLATE_WORDS = "Instruction : Input : Response : System : User : Assistant : backwards repeat"


def instruction_records(count: int, seed: int = 0) -> list[dict]:
    """Alpaca-style and chat records whose answer follows from the prompt."""
    rng = random.Random(seed)
    records: list[dict] = []
    for index in range(count):
        words = sentence(rng).split()[1:-1]  # "the big horse sees the red fox": 6 words
        if index % 3 == 0:
            records.append(
                {
                    "instruction": "backwards",
                    "input": " ".join(words),
                    "output": " ".join(words[::-1]),
                }
            )
        elif index % 3 == 1:
            records.append({"instruction": "repeat " + " ".join(words), "output": " ".join(words)})
        else:
            records.append(
                {
                    "messages": [
                        {"role": "system", "content": "repeat"},
                        {"role": "user", "content": " ".join(words)},
                        {"role": "assistant", "content": " ".join(words)},
                    ]
                }
            )
    return records


def write_instructions(folder: Path) -> Path:
    path = folder / "instructions.jsonl"
    lines = [json.dumps(record) for record in instruction_records(120)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_vocab_text(folder: Path) -> Path:
    """Plain text for the word-piece vocabulary: the grammar and the template's words."""
    path = write_corpus(folder / "vocab.txt", documents=60, seed=0)
    with path.open("a", encoding="utf-8") as f:
        f.write(TEMPLATE_WORDS + "\n")
    return path


SAMPLE = ObjectiveSample(
    "gpt2-small",
    {"encoder.num_layers": 2, "encoder.num_heads": 2},
    write_corpus=write_instructions,
    vocab_corpus=write_vocab_text,
)
