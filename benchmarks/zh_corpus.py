"""The Chinese pre-training corpus of the issue-11 experiment: CLUECorpusSmall plus the
unlabelled text of the Chinese task files' *training* parts.

    python benchmarks/zh_corpus.py --data ../shared/data --cmrc-train CMRC_TRAIN.json \
        --c3-train C3_TRAIN.json --out corpus.txt

Only text a fine-tuning run may train on goes in, so no reported score has seen its inputs
during pre-training: ChnSentiCorp and book_review ``train.tsv`` (the text columns),
msra_ner ``train.tsv`` (characters joined, tags dropped), the CMRC2018 articles that the
experiment fine-tunes on plus the contexts of CMRC2018 ``test.json`` (never scored: its answers
are placeholders), and the C3 documents that the experiment fine-tunes on (dialogue lines,
questions and choices). One text per line; ``mlm`` packs lines into full windows. Prints one
JSON object with the characters taken from each source.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def tsv_texts(path: Path, columns: tuple[str, ...]) -> Iterator[str]:
    with path.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            for column in columns:
                if row.get(column):
                    yield row[column]


def squad_contexts(path: Path) -> Iterator[str]:
    for article in json.loads(path.read_text(encoding="utf-8"))["data"]:
        for paragraph in article["paragraphs"]:
            yield paragraph["context"]
            for qa in paragraph.get("qas", []):
                yield qa["question"]


def c3_texts(path: Path) -> Iterator[str]:
    documents: list[Any] = json.loads(path.read_text(encoding="utf-8"))
    for sentences, items, _ in documents:
        yield "".join(sentences)
        for item in items:
            yield item["question"] + " " + " ".join(item["choice"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the data mirror (../shared/data)")
    parser.add_argument("--cmrc-train", type=Path, required=True, help="CMRC2018 training part")
    parser.add_argument("--c3-train", type=Path, required=True, help="C3 training part")
    parser.add_argument("--out", type=Path, required=True, help="corpus file to write")
    args = parser.parse_args()
    if args.out.exists():
        print(f"{args.out} exists; give another --out", file=sys.stderr)
        return 2
    data: Path = args.data
    sources: dict[str, Iterator[str]] = {
        # CLUECorpusSmall_bert_sampled.txt is the same text split into sentences: not twice.
        "CLUECorpusSmall_sampled": text_lines(data / "corpora" / "CLUECorpusSmall_sampled.txt"),
        "chnsenticorp/train": tsv_texts(data / "chnsenticorp" / "train.tsv", ("text_a", "text_b")),
        "book_review/train": tsv_texts(data / "book_review" / "train.tsv", ("text_a", "text_b")),
        "msra_ner/train": (
            t.replace(" ", "") for t in tsv_texts(data / "msra_ner" / "train.tsv", ("text_a",))
        ),
        "cmrc2018/train part": squad_contexts(args.cmrc_train),
        "cmrc2018/test contexts": squad_contexts(data / "cmrc2018" / "test.json"),
        "c3/train part": c3_texts(args.c3_train),
    }
    counts: dict[str, int] = {}
    partial = args.out.with_name(f".tmp-{args.out.name}")
    with partial.open("w", encoding="utf-8") as out:
        for name, texts in sources.items():
            counts[name] = 0
            for text in texts:
                text = " ".join(text.split())  # one line each: no stray newlines or tabs
                if text:
                    out.write(text + "\n")
                    counts[name] += len(text)
    partial.replace(args.out)
    print(json.dumps({"out": str(args.out), "characters": counts, "total": sum(counts.values())}))
    return 0


def text_lines(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8") as handle:
        yield from handle


if __name__ == "__main__":
    raise SystemExit(main())
