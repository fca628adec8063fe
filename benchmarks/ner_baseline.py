"""A simple NER baseline beside the tagging rows: a gazetteer of the training entities.

    python benchmarks/ner_baseline.py --train ../shared/data/msra_ner/train.tsv \
        --eval ../shared/data/msra_ner/dev.tsv [../shared/data/msra_ner/test.tsv]

Every entity string of the training file (characters with their BIO type) goes into a
dictionary with its most frequent type; evaluation text is tagged by greedy longest match,
left to right. Entity-level F1 (exact span and type) by seqeval, as `evaluate --task tagging`
reports it. Prints one JSON object per evaluation file.
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
from pathlib import Path

from seqeval.metrics import f1_score, precision_score, recall_score


def read(path: Path) -> list[tuple[list[str], list[str]]]:
    with path.open(encoding="utf-8", newline="") as handle:
        rows = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [(r["text_a"].split(" "), r["label"].split(" ")) for r in rows]


def entities(chars: list[str], tags: list[str]) -> list[tuple[str, str]]:
    found, start, kind = [], None, None
    for i, tag in enumerate([*tags, "O"]):
        if start is not None and not (tag.startswith("I-") and tag[2:] == kind):
            found.append(("".join(chars[start:i]), kind))
            start = None
        if tag.startswith("B-") or (tag.startswith("I-") and start is None):
            start, kind = i, tag[2:]
    return found


def tag(chars: list[str], gazetteer: dict[str, str], longest: int) -> list[str]:
    tags = ["O"] * len(chars)
    i = 0
    while i < len(chars):
        for size in range(min(longest, len(chars) - i), 0, -1):
            kind = gazetteer.get("".join(chars[i : i + size]))
            if kind is not None:
                tags[i : i + size] = [f"B-{kind}"] + [f"I-{kind}"] * (size - 1)
                i += size
                break
        else:
            i += 1
    return tags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--eval", type=Path, nargs="+", required=True)
    args = parser.parse_args()
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for chars, tags in read(args.train):
        for text, kind in entities(chars, tags):
            counts[text][kind] += 1
    gazetteer = {text: kinds.most_common(1)[0][0] for text, kinds in counts.items()}
    longest = max(map(len, gazetteer))
    for path in args.eval:
        rows = read(path)
        gold = [tags for _, tags in rows]
        predicted = [tag(chars, gazetteer, longest) for chars, _ in rows]
        print(
            json.dumps(
                {
                    "data": str(path),
                    "baseline": f"training-entity gazetteer ({len(gazetteer)} strings), "
                    "longest match",
                    "rows": len(rows),
                    "f1": round(f1_score(gold, predicted), 4),
                    "precision": round(precision_score(gold, predicted), 4),
                    "recall": round(recall_score(gold, predicted), 4),
                }
            )
        )


if __name__ == "__main__":
    main()
