"""Conformance sample of the ``speech2text`` task: synthetic recordings of one or two tones, each
tone written as its word (``low``, ``mid``, ``high``), and a tiny encoder-decoder with a
character-level WordPiece vocabulary that learns to transcribe them."""

from __future__ import annotations

import random
import string
from pathlib import Path

import numpy as np
import torch
from sample_speech_classification import RATE, TONES, speech_config, tone, write_wav
from task_samples import Sample

import pretrainkit
from pretrainkit.tokenization import load_tokenizer

# Characters and their word-inner pieces, so any lower-case word is spelt out.
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [
    *string.ascii_lowercase,
    *(f"##{c}" for c in string.ascii_lowercase),
]


def write_character_tokenizer(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return folder / "vocab.txt"


def write_tone_words(path: Path, rows: int, seed: int) -> None:
    """``audio<TAB>text`` rows: a tone per word, one or two words a recording."""
    rng = random.Random(seed)
    folder = path.parent / f"{path.stem}_audio"
    folder.mkdir(exist_ok=True)
    lines = ["audio\ttext"]
    for row in range(rows):
        words = [rng.choice(sorted(TONES)) for _ in range(rng.choice((1, 2)))]
        samples = np.concatenate([tone(rng, TONES[word], 0.13) for word in words])
        write_wav(folder / f"{row}.wav", samples, RATE)
        lines.append(f"{folder.name}/{row}.wav\t{' '.join(words)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_base(folder: Path) -> Path:
    """A tiny speech encoder-decoder with the character vocabulary, not trained."""
    tokenizer = load_tokenizer(write_character_tokenizer(folder.parent / "vocab"))
    torch.manual_seed(0)
    model = pretrainkit.build_model(speech_config(vocab_size=len(VOCAB)))
    model.tokenizer = tokenizer
    return model.save(folder)


# Spelling words out needs more steps than one softmax; two 0.13 s tones fit in the 32 frames
# (seq_length) of the conformance run.
SAMPLE = Sample(
    write_tone_words,
    threshold=0.8,
    steps=200,
    options={"sample_rate": RATE, "num_mel_bins": 40, "target_length": 16},
    base=write_base,
)
