"""The simple baseline beside a sentence-similarity result: cosine of TF-IDF vectors.

Fits TF-IDF (word 1-2-grams, sublinear tf) on the training pairs' sentences and reports the
Spearman and Pearson correlation of the pairs' cosine similarity with the gold scores of the
evaluation file (STS-B CSV ``s1,s2,score`` or a scored pair TSV, read by the regression task's
reader). Prints one JSON line.

    python benchmarks/sts_tfidf_baseline.py --train ../shared/data/stsb-multi-mt/stsb-en-train.csv \\
        --dev ../shared/data/stsb-multi-mt/stsb-en-dev.csv
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.feature_extraction.text import TfidfVectorizer

from pretrainkit.tasks.regression import read_regression_file, scores_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", required=True)
    parser.add_argument("--dev", required=True)
    args = parser.parse_args()
    train = read_regression_file(args.train)
    dev = read_regression_file(args.dev)
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    vectorizer.fit([*train.texts_a, *(train.texts_b or [])])
    a = vectorizer.transform(dev.texts_a)
    b = vectorizer.transform(dev.texts_b or [])
    cosine = np.asarray(a.multiply(b).sum(axis=1)).ravel()  # rows are L2-normalised
    gold = scores_of(dev)
    print(json.dumps({
        "train": args.train, "dev": args.dev, "pairs": len(dev),
        "spearman": round(float(spearmanr(cosine, gold).statistic), 4),
        "pearson": round(float(pearsonr(cosine, gold).statistic), 4),
        "load_average": os.getloadavg(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
