"""Parallel sentences for cross-lingual sentence-embedding distillation (issue 14, recipe 2).

The rows of ``stsb-multi-mt/stsb-<lang>-train.csv`` are aligned across its 10 languages, so
English sentence 1 (2) of row i and sentence 1 (2) of row i in another language are a
translation pair; with ``--news`` the en-zh news-commentary pairs are added. Only *train*
files are read (never the dev split, XNLI or PAWS-X, which are evaluation data). Writes
``english<TAB>translation`` lines (the ``sentence`` recipe's format) and prints counts.

    python benchmarks/parallel_pairs.py --data ../shared/data --out pairs.tsv --news
    python benchmarks/parallel_pairs.py --data ../shared/data --out text.txt --text
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

LANGUAGES = ("de", "es", "fr", "it", "nl", "pl", "pt", "ru", "zh")


def read_sts(path: Path) -> list[tuple[str, str, float]]:
    """``s1,s2,score`` rows without a header (sentences may hold quoted commas)."""
    rows = []
    with path.open(encoding="utf-8", newline="") as f:
        for number, row in enumerate(csv.reader(f), start=1):
            if len(row) != 3:
                raise SystemExit(f"{path}:{number}: expected s1,s2,score, got {len(row)} fields")
            rows.append((row[0], row[1], float(row[2])))
    return rows


def clean(text: str) -> str:
    return " ".join(text.replace("\t", " ").split())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--news", action="store_true", help="add the en-zh news-commentary pairs")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--text", action="store_true", help="write every sentence once a line (for `vocab`)"
    )
    mode.add_argument(
        "--tagged",
        action="store_true",
        help="write language<TAB>sentence lines (Embedding-Push centroids, finetune "
        "--centroid-text)",
    )
    args = parser.parse_args()
    english = read_sts(args.data / "stsb-multi-mt" / "stsb-en-train.csv")
    pairs: list[tuple[str, str]] = []
    tagged: list[tuple[str, str]] = []  # (language, sentence), both sides
    counts: dict[str, int] = {}
    for lang in LANGUAGES:
        other = read_sts(args.data / "stsb-multi-mt" / f"stsb-{lang}-train.csv")
        if len(other) != len(english):
            raise SystemExit(f"stsb-{lang}-train.csv has {len(other)} rows, English {len(english)}")
        before = len(pairs)
        for (e1, e2, _), (x1, x2, _) in zip(english, other):
            for e, x in ((e1, x1), (e2, x2)):
                if clean(e) and clean(x):
                    pairs.append((clean(e), clean(x)))
                    tagged += [("en", clean(e)), (lang, clean(x))]
        counts[lang] = len(pairs) - before
    if args.news:
        news = args.data / "corpora" / "news-commentary-v13-en-zh_sampled.txt"
        before = len(pairs)
        for line in news.read_text(encoding="utf-8").splitlines():
            parts = line.split("\t")
            if len(parts) == 2 and clean(parts[0]) and clean(parts[1]):
                pairs.append((clean(parts[0]), clean(parts[1])))
                tagged += [("en", clean(parts[0])), ("zh", clean(parts[1]))]
        counts["news-zh"] = len(pairs) - before
    unique = list(dict.fromkeys(pairs))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    if args.tagged:
        lines = dict.fromkeys(f"{lang}\t{text}\n" for lang, text in tagged)
        tmp.write_text("".join(lines), encoding="utf-8")
    elif args.text:
        sentences = list(dict.fromkeys(s for pair in unique for s in pair))
        tmp.write_text("".join(s + "\n" for s in sentences), encoding="utf-8")
    else:
        tmp.write_text("".join(f"{e}\t{x}\n" for e, x in unique), encoding="utf-8")
    tmp.replace(args.out)
    english_count = len({e for e, _ in unique})
    print(json.dumps({"out": str(args.out), "pairs": len(unique), "english": english_count,
                      "per_language": counts}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
