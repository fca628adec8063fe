"""Simple strong baselines for the four CSL tasks, on the splits of ``csl.py``.

    python benchmarks/csl_baseline.py --data ../shared/data --out /work/runs/csl

- ``ctg`` (title → category), ``dcp`` (abstract → discipline): TF-IDF over character 1-3-grams
  (sublinear tf) + logistic regression (C=10, fixed before looking at the held-out part); the
  majority class beside it.
- ``ts`` (abstract → title): the first N characters of the abstract, N chosen on the training
  part (the best mean ROUGE-L over N = 5, 10, ..., 60), scored on the held-out part.
- ``kg`` (abstract + title → keywords): (a) the 4 character n-grams (n = 2..4) of highest TF-IDF
  in the text, overlapping ones dropped; (b) the lexicon rule: every keyword seen in the
  training targets that occurs in the text, the 4 most frequent in training first.

Scores use the metrics of ``pretrainkit.tasks.text_metrics`` (what text2text reports). Prints
one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
from csl import split

from pretrainkit.tasks.text_metrics import text_metrics


def rows(path: Path) -> tuple[list[str], list[str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.split("\t")[1] for line in lines], [line.split("\t")[2] for line in lines]


def classify(train: Path, held_out: Path) -> dict[str, float]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    texts, labels = rows(train)
    test_texts, test_labels = rows(held_out)
    vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True)
    features = vectorizer.fit_transform(texts)
    model = LogisticRegression(C=10.0, max_iter=2000).fit(features, labels)
    predicted = model.predict(vectorizer.transform(test_texts)).tolist()
    majority = Counter(labels).most_common(1)[0][0]
    return {
        "tfidf_logreg_accuracy": text_metrics(predicted, test_labels, ["accuracy"])["accuracy"],
        "majority_accuracy": text_metrics([majority] * len(test_labels), test_labels, ["accuracy"])[
            "accuracy"
        ],
    }


def lead(train: Path, held_out: Path) -> dict[str, float]:
    texts, titles = rows(train)
    best = max(
        range(5, 61, 5),
        key=lambda n: text_metrics([t[:n] for t in texts], titles, ["rouge_l"])["rouge_l"],
    )
    test_texts, test_titles = rows(held_out)
    scores = text_metrics([t[:best] for t in test_texts], test_titles, ["rouge_l", "accuracy"])
    return {"lead_n": best, **{f"lead_{k}": v for k, v in scores.items()}}


def keywords(train: Path, held_out: Path, top: int = 4) -> dict[str, float]:
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts, targets = rows(train)
    test_texts, test_targets = rows(held_out)
    vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(2, 4), sublinear_tf=True)
    vectorizer.fit(texts + test_texts)  # unsupervised: document frequencies only
    names = vectorizer.get_feature_names_out()
    tfidf = []
    for row in vectorizer.transform(test_texts):
        chosen: list[str] = []
        for index in row.indices[np.argsort(-row.data)]:
            term = str(names[index])
            if any(term in kept or kept in term for kept in chosen):
                continue  # overlapping n-grams of one word: keep the best-scored one
            chosen.append(term)
            if len(chosen) == top:
                break
        tfidf.append("_".join(chosen))
    seen = Counter(k for target in targets for k in target.split("_") if k)
    lexicon = []
    for text in test_texts:
        found = [k for k in seen if len(k) > 1 and k in text]
        lexicon.append("_".join(sorted(found, key=lambda k: (-seen[k], -len(k)))[:top]))
    names_ = ["keyword_f1", "rouge_l"]
    return {
        **{f"tfidf_{k}": v for k, v in text_metrics(tfidf, test_targets, names_).items()},
        **{f"lexicon_{k}": v for k, v in text_metrics(lexicon, test_targets, names_).items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("PRETRAINKIT_DATA", "")))
    parser.add_argument("--out", type=Path, required=True, help="where csl.py writes its splits")
    args = parser.parse_args()
    result: dict[str, dict[str, float]] = {}
    for task, score in (("ctg", classify), ("dcp", classify), ("ts", lead), ("kg", keywords)):
        train, held_out = split(args.data, task, args.out)
        result[task] = {k: round(v, 4) for k, v in score(train, held_out).items()}
    result["load_average"] = {"1min": os.getloadavg()[0]}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
