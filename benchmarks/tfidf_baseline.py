"""The simple baseline beside every text-classification result: TF-IDF + logistic regression.

Reads the files with the classification task's own reader (header ``label<TAB>text_a
[<TAB>text_b]``, or ``--columns`` for files without one), so both sides see the same rows.
Features: word 1-2-grams for space-separated text, character 1-3-grams for Chinese (``--chars``,
or chosen automatically when the text has almost no spaces). Prints one JSON line.

    python benchmarks/tfidf_baseline.py --train ../shared/data/chnsenticorp/train.tsv \\
        --dev ../shared/data/chnsenticorp/dev.tsv
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score

from pretrainkit.tasks.tsv import read_classification_tsv


def texts(data) -> list[str]:
    if data.texts_b is None:
        return list(data.texts_a)
    return [f"{a} ||| {b}" for a, b in zip(data.texts_a, data.texts_b)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", required=True)
    parser.add_argument("--dev", required=True)
    parser.add_argument("--columns", help="e.g. label,text_a for files without a header")
    parser.add_argument("--chars", action="store_true", help="character n-grams (Chinese)")
    parser.add_argument("--c", type=float, default=4.0, help="inverse regularisation strength")
    args = parser.parse_args()
    columns = tuple(args.columns.split(",")) if args.columns else None
    start = time.perf_counter()
    train = read_classification_tsv(args.train, columns=columns)
    dev = read_classification_tsv(args.dev, columns=columns)
    train_texts, dev_texts = texts(train), texts(dev)
    spaces = sum(t.count(" ") for t in train_texts[:500]) / max(1, sum(map(len, train_texts[:500])))
    chars = args.chars or spaces < 0.02
    vectorizer = TfidfVectorizer(
        analyzer="char" if chars else "word",
        ngram_range=(1, 3) if chars else (1, 2),
        sublinear_tf=True,
        min_df=2,
        token_pattern=None if chars else r"(?u)\b\w+\b|[^\w\s]",
    )
    x_train = vectorizer.fit_transform(train_texts)
    classifier = LogisticRegression(C=args.c, max_iter=2000)
    classifier.fit(x_train, np.array(train.labels))
    predicted = classifier.predict(vectorizer.transform(dev_texts))
    gold = np.array(dev.labels)
    print(json.dumps({
        "train": args.train, "dev": args.dev, "rows": [len(train), len(dev)],
        "features": "char 1-3-grams" if chars else "word 1-2-grams",
        "accuracy": round(float(accuracy_score(gold, predicted)), 4),
        "macro_f1": round(float(f1_score(gold, predicted, average="macro")), 4),
        "seconds": round(time.perf_counter() - start, 1),
        "load_average": os.getloadavg(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
