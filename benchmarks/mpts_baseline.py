"""A simple baseline for MPTS beside the bi-encoder and the cross-encoder: TF-IDF + logistic
regression per perspective, on the same 5 folds and with the same metrics.

    python benchmarks/mpts_baseline.py --data ../shared/data/mpts/dev.tsv [--folds 5] [--seed 42]

Features of a pair: the element-wise product of the two texts' TF-IDF vectors (the words they
share, weighted) and their cosine. One logistic regression per perspective (balanced classes,
probability >= 0.5 = similar), fitted on the other folds. Folds are `pretrainkit finetune
--folds K`'s: ``numpy.random.default_rng(seed).permutation(rows)`` split in K; scoring is
``tasks.mpts_format.perspective_metrics``, so the numbers compare one to one. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from pretrainkit.tasks.mpts_format import perspective_metrics, read_pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    data = read_pairs(args.data)
    names = list(data.perspectives)
    gold = data.gold()  # [n, P] 0/1
    order = np.random.default_rng(args.seed).permutation(len(gold))
    results = []
    for held_out in np.array_split(order, args.folds):
        rest = np.setdiff1d(order, held_out)
        held_out = np.sort(held_out)
        vectorizer = TfidfVectorizer(sublinear_tf=True, min_df=2, stop_words="english")
        vectorizer.fit([data.texts_a[i] for i in rest] + [data.texts_b[i] for i in rest])
        a = vectorizer.transform(data.texts_a)
        b = vectorizer.transform(data.texts_b)
        shared = a.multiply(b).tocsr()
        cosine = sparse.csr_matrix(np.asarray(shared.sum(1)))
        features = sparse.hstack([shared, cosine]).tocsr()
        probabilities = np.zeros((len(held_out), len(names)))
        for p in range(len(names)):
            y = gold[rest, p]
            if y.min() == y.max():  # one class in training: predict it
                probabilities[:, p] = float(y[0])
                continue
            model = LogisticRegression(class_weight="balanced", max_iter=2000, C=4.0)
            model.fit(features[rest], y)
            probabilities[:, p] = model.predict_proba(features[held_out])[:, 1]
        results.append(perspective_metrics(probabilities, gold[held_out], names, 0.5))
    summary = {}
    for key in ("weighted_f1", "macro_f1", "accuracy", "macro_auc"):
        values = np.array([r[key] for r in results])
        summary[key] = {"mean": float(values.mean()), "std": float(values.std(ddof=1))}
    print(
        json.dumps(
            {
                "data": args.data,
                "baseline": "TF-IDF(a) * TF-IDF(b) + cosine, logistic regression per perspective",
                **summary,
                "folds": results,
                "load_average": round(os.getloadavg()[0], 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
