"""Cross-lingual sentence-embedding evaluation on STS-B multi-mt *dev* (issue 14, recipe 2).

For each model folder: Spearman of cosine against the gold scores monolingually in each of the
10 languages, cross-lingually (English sentence 1 with sentence 2 in each other language), and
translation retrieval accuracy (each English dev sentence's nearest neighbour among all the
other language's dev sentences is its own translation). Also parameters and encode throughput.
Prints one JSON object (and a Markdown table with --table).

    python benchmarks/xling_sts.py --data ../shared/data --model teacher student --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from parallel_pairs import LANGUAGES, read_sts
from stsb_minilm import spearman


def evaluate(model_dir: str, data: Path, batch_size: int) -> dict:
    import pretrainkit

    model = pretrainkit.load(model_dir)
    rows = {
        lang: read_sts(data / "stsb-multi-mt" / f"stsb-{lang}-dev.csv")
        for lang in ("en", *LANGUAGES)
    }
    gold = np.array([score for _, _, score in rows["en"]])
    vectors: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    started = time.perf_counter()
    count = 0
    for lang, items in rows.items():
        first = [a for a, _, _ in items]
        second = [b for _, b, _ in items]
        encoded = model.encode(first + second, batch_size=batch_size, normalize=True)
        vectors[lang] = (encoded[: len(first)], encoded[len(first) :])
        count += len(first) + len(second)
    seconds = time.perf_counter() - started
    result: dict = {
        "model": model_dir,
        "parameters": sum(p.numel() for p in model.parameters()),
        "sentences_per_s": round(count / seconds, 1),
        "monolingual": {},
        "cross_lingual": {},
        "retrieval": {},
    }
    for lang in ("en", *LANGUAGES):
        a, b = vectors[lang]
        result["monolingual"][lang] = spearman((a * b).sum(1), gold)
    english_a = vectors["en"][0]
    english = np.concatenate(vectors["en"])
    for lang in LANGUAGES:
        result["cross_lingual"][lang] = spearman((english_a * vectors[lang][1]).sum(1), gold)
        other = np.concatenate(vectors[lang])
        texts = [a for a, _, _ in rows[lang]] + [b for _, b, _ in rows[lang]]
        nearest = (english @ other.T).argmax(1)
        # A duplicate translation anywhere counts as found (same text, same vector).
        result["retrieval"][lang] = float(
            np.mean([texts[j] == texts[i] for i, j in enumerate(nearest)])
        )
    for key in ("monolingual", "cross_lingual", "retrieval"):
        result[f"{key}_mean"] = float(np.mean(list(result[key].values())))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", nargs="+", required=True)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table", action="store_true", help="also print a Markdown table")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = [evaluate(m, args.data, args.batch_size) for m in args.model]
    print(json.dumps({"load_average": os.getloadavg(), "results": results}, indent=2))
    if args.table:
        print("| model | params | en | mono avg | x-ling avg (en→x) | retrieval avg | sent/s |")
        print("|---|---|---|---|---|---|---|")
        for r in results:
            print(
                f"| {r['model']} | {r['parameters'] / 1e6:.1f}M | {r['monolingual']['en']:.4f} | "
                f"{r['monolingual_mean']:.4f} | {r['cross_lingual_mean']:.4f} | "
                f"{r['retrieval_mean']:.3f} | {r['sentences_per_s']} |"
            )


if __name__ == "__main__":
    main()
