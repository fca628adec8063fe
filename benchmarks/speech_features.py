"""Speech input speed on CPU: feature extraction throughput and the encoder's real-time factor.

1. Features: every FSDD recording (8 kHz) read with ``read_wav`` and turned into normalised
   80-bin log-mel features (``Filterbank`` + ``normalize``), in utterances/s and seconds of
   audio per second; and, on the same 1-s 16 kHz signals, ``Filterbank`` against transformers'
   numpy ``Speech2TextFeatureExtractor`` (the same features, checked equal to 1e-4).
2. Encoder real-time factor (compute time / audio duration, lower is better): the speech
   embedding + encoder of the ``s2t-small`` preset (12 layers, hidden 256) and of the tiny FSDD
   model (3 layers, hidden 128) on one 10-s utterance (1,000 frames), eval mode, no gradients.
Prints one JSON object; run with one thread for the table.

    python benchmarks/speech_features.py --data ../shared/data/fsdd/recordings --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import pretrainkit
from pretrainkit.data.audio import Filterbank, normalize, read_wav


def fsdd_throughput(folder: Path, limit: int) -> dict[str, float]:
    files = sorted(folder.glob("*.wav"))[:limit]
    bank = Filterbank(8000, 80)
    start = time.perf_counter()
    seconds = 0.0
    for file in files:
        audio = read_wav(file, 8000)
        normalize(bank(audio.samples))
        seconds += len(audio.samples) / 8000
    elapsed = time.perf_counter() - start
    return {
        "utterances": len(files),
        "utterances_per_s": len(files) / elapsed,
        "audio_seconds_per_s": seconds / elapsed,
    }


def against_transformers(count: int) -> dict[str, float]:
    from transformers import Speech2TextFeatureExtractor

    rng = np.random.default_rng(0)
    signals = [(0.1 * rng.standard_normal(16000)).astype(np.float32) for _ in range(count)]
    extractor, bank = Speech2TextFeatureExtractor(), Filterbank(16000, 80)
    timings: dict[str, list[float]] = {"pretrainkit": [], "transformers": []}
    for _ in range(3):  # interleaved rounds
        start = time.perf_counter()
        ours = [normalize(bank(s)).numpy() for s in signals]
        timings["pretrainkit"].append(time.perf_counter() - start)
        start = time.perf_counter()
        theirs = [extractor(s, sampling_rate=16000).input_features[0] for s in signals]
        timings["transformers"].append(time.perf_counter() - start)
    worst = max(float(np.abs(a - b).max()) for a, b in zip(ours, theirs))
    assert worst < 1e-4, worst
    best = {name: statistics.median(values) for name, values in timings.items()}
    return {
        "utterances_1s_16k": count,
        "pretrainkit_utterances_per_s": count / best["pretrainkit"],
        "transformers_numpy_utterances_per_s": count / best["transformers"],
        "max_abs_difference": worst,
    }


TINY_FSDD = {
    "hidden_size": 128,
    "vocab_size": 0,
    "embedding": {
        "parts": ["speech", "sinusoidal"],
        "num_mel_bins": 80,
        "conv_channels": 256,
        "max_positions": 512,
    },  # fmt: skip
    "encoder": {
        "name": "transformer",
        "num_layers": 3,
        "num_heads": 4,
        "ffn_size": 512,
        "norm_position": "pre",
        "final_norm": True,
    },  # fmt: skip
    "targets": [{"name": "classification", "options": {"labels": ["a", "b"]}}],
}


def real_time_factor(spec, seconds: float, repeats: int) -> float:
    torch.manual_seed(0)
    model = pretrainkit.build_model(spec).eval()
    frames = int(seconds * 100)
    features = torch.randn(1, frames, 80)
    mask = torch.ones(1, frames, dtype=torch.long)
    timings = []
    with torch.inference_mode():
        model.encoder_states(features, mask)  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            model.encoder_states(features, mask)
            timings.append(time.perf_counter() - start)
    return statistics.median(timings) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/fsdd/recordings"))
    parser.add_argument("--limit", type=int, default=2500, help="FSDD files to read")
    parser.add_argument("--compare", type=int, default=100, help="1-s signals vs transformers")
    parser.add_argument("--seconds", type=float, default=10.0, help="utterance for the RTF")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = {
        "threads": args.threads,
        "load_average_before": os.getloadavg(),
        "fsdd": fsdd_throughput(args.data, args.limit),
        "vs_transformers": against_transformers(args.compare),
        "encoder_rtf": {
            "s2t-small": real_time_factor("s2t-small", args.seconds, args.repeats),
            "fsdd-tiny": real_time_factor(TINY_FSDD, args.seconds, args.repeats),
        },
        "load_average_after": os.getloadavg(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
