"""Conformance sample of the ``speech_classification`` task: short synthetic recordings whose
label is the pitch of a tone buried in noise, and the tiny speech encoder that learns it.

Also holds what the speech tests share: a WAV writer and the tiny speech model builder.
"""

from __future__ import annotations

import random
import wave
from pathlib import Path

import numpy as np
import torch
from task_samples import Sample

import pretrainkit

RATE = 8000
MEL_BINS = 40
TONES = {"low": 300.0, "mid": 900.0, "high": 2000.0}
_LAYERS = {"name": "transformer", "num_layers": 2, "num_heads": 2, "ffn_size": 128,
           "norm_position": "pre", "final_norm": True}  # fmt: skip
# A speech encoder small enough for the tests: two conv layers, 2 transformer layers, hidden 64.
TINY_SPEECH = {
    "hidden_size": 64,
    "vocab_size": 0,
    "embedding": {
        "parts": ["speech", "sinusoidal"],
        "num_mel_bins": MEL_BINS,
        "conv_channels": 64,
        "max_positions": 512,
    },  # fmt: skip
    "encoder": _LAYERS,
}


def speech_config(labels: list[str] | None = None, vocab_size: int = 0) -> dict:
    """A tiny speech model: an encoder with a classification head over ``labels``, or (with a
    ``vocab_size``) an encoder-decoder writing tokens."""
    if vocab_size == 0:
        head = {"labels": labels or ["a", "b"], "pooling": "mean"}
        return {**TINY_SPEECH, "targets": [{"name": "classification", "options": head}]}
    decoder = {**_LAYERS, "causal": True, "start_id": 2, "pad_id": 0}  # [CLS] starts
    return {
        **TINY_SPEECH,
        "vocab_size": vocab_size,
        "tgt_embedding": {"parts": ["word", "sinusoidal"], "max_positions": 64},
        "decoder": decoder,
        "share_embedding": False,  # the source side has no word table
        "targets": [{"name": "seq2seq_lm"}],
    }


def write_wav(
    path: Path, samples: np.ndarray, rate: int = RATE, width: int = 2, channels: int = 1
) -> Path:
    """``samples`` (floats in [-1, 1), ``[n]`` or ``[n, channels]``) as a PCM WAV file."""
    data = np.asarray(samples, np.float64)
    data = np.repeat(data[:, None], channels, axis=1) if data.ndim == 1 else data
    scale = 2.0 ** (8 * width - 1)
    ints = np.clip(np.round(data * scale), -scale, scale - 1).astype(np.int64)
    if width == 1:
        raw = (ints + 128).astype(np.uint8).tobytes()
    elif width == 3:
        raw = b"".join(int(v).to_bytes(3, "little", signed=True) for v in ints.flatten())
    else:
        raw = ints.astype("<i2" if width == 2 else "<i4").tobytes()
    with wave.open(str(path), "wb") as file:
        file.setnchannels(data.shape[1])
        file.setsampwidth(width)
        file.setframerate(rate)
        file.writeframes(raw)
    return path


def tone(rng: random.Random, frequency: float, seconds: float = 0.3) -> np.ndarray:
    """Noise with a tone at ``frequency`` (random phase and loudness) in its middle half: a
    steady tone would vanish in per-utterance mean normalisation, as real speech does not."""
    t = np.arange(int(RATE * seconds)) / RATE
    noise = np.random.default_rng(rng.randrange(1 << 30)).standard_normal(len(t))
    amplitude = rng.uniform(0.2, 0.5)
    wave_ = amplitude * np.sin(2 * np.pi * frequency * t + rng.uniform(0, 6.28))
    wave_[: len(t) // 4] = wave_[-len(t) // 4 :] = 0.0
    return wave_ + 0.05 * noise


def write_tones(path: Path, rows: int, seed: int) -> None:
    """``label<TAB>audio`` rows; the recordings beside the TSV, in ``<stem>_audio/``."""
    rng = random.Random(seed)
    folder = path.parent / f"{path.stem}_audio"
    folder.mkdir(exist_ok=True)
    lines = ["label\taudio"]
    for row in range(rows):
        label = rng.choice(sorted(TONES))
        write_wav(folder / f"{row}.wav", tone(rng, TONES[label]))
        lines.append(f"{label}\t{folder.name}/{row}.wav")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_base(folder: Path) -> Path:
    """The base folder the conformance run fine-tunes: a tiny speech encoder without a
    tokenizer (a classifier reads no text)."""
    torch.manual_seed(0)
    return pretrainkit.build_model(speech_config()).save(folder)


SAMPLE = Sample(
    write_tones,
    threshold=0.8,
    options={"sample_rate": RATE, "num_mel_bins": MEL_BINS},
    base=write_base,
)
