"""Data of the small multilingual BERT (issue 14 recipe 3, issue 15 backbone).

Three modes, each printing one JSON object:

    # the MLM corpus: deduplicated, one sentence a line, grouped by language
    python benchmarks/multilingual_corpus.py --data ../shared/data --out corpus.txt
    # unknown-token rate per language on held-out STS-B multi-mt dev sentences (measuring only)
    python benchmarks/multilingual_corpus.py --data ../shared/data --coverage TOKENIZER \
        --corpus corpus.txt
    # PAWS-X English split into train / select (shuffled with a fixed seed)
    python benchmarks/multilingual_corpus.py --data ../shared/data --pawsx-split DIR

The corpus takes only text a later evaluation never scores: the STS-B multi-mt *train*
sentences of all ten languages, both sides of the en-zh news-commentary pairs and
CLUECorpusSmall (the sentence-split `_bert_` sample, whole documents in file order). Never a
dev split, XNLI or PAWS-X: the STS-B dev files are read only to drop the train sentences that
repeat a dev sentence word for word (about 9 % of the dev sentences do), so an STS-B dev
evaluation of this encoder scores text it never saw. CLUECorpusSmall is cut so that Chinese holds at most
``--zh-ratio`` times the text of the largest other language, counted in units that match
WordPiece granularity (characters for Chinese, whitespace words otherwise), so it does not
dominate. One sentence a line; a blank line ends each source's block of a language and each
CLUECorpusSmall document: `mlm` packs the sentences into full windows and puts a separator
only between documents.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
from collections.abc import Iterator
from pathlib import Path

LANGUAGES = ("en", "de", "es", "fr", "it", "nl", "pl", "pt", "ru", "zh")
PAWSX_ZERO_SHOT = ("de", "es", "fr", "zh")


def units(text: str, language: str) -> int:
    """Text size in about-one-token units: characters for Chinese, words for the others."""
    if language == "zh":
        return sum(1 for character in text if not character.isspace())
    return len(text.split())


def normalise(text: str) -> str:
    """One line: no stray newlines, tabs or repeated spaces."""
    return " ".join(text.split())


def stsb_sentences(data: Path, language: str, split: str) -> Iterator[str]:
    """Both sentences of every row of `stsb-{language}-{split}.csv` (no header)."""
    path = data / "stsb-multi-mt" / f"stsb-{language}-{split}.csv"
    with path.open(encoding="utf-8", newline="") as handle:
        for line_number, row in enumerate(csv.reader(handle), start=1):
            if len(row) != 3:
                raise SystemExit(
                    f"{path}:{line_number}: expected s1,s2,score, got {len(row)} fields"
                )
            yield row[0]
            yield row[1]


def news_commentary(data: Path, side: int) -> Iterator[str]:
    """One side (0 English, 1 Chinese) of the `en<TAB>zh` news-commentary pairs."""
    path = data / "corpora" / "news-commentary-v13-en-zh_sampled.txt"
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 2:
                raise SystemExit(
                    f"{path}:{line_number}: expected en<TAB>zh, got {len(fields)} fields"
                )
            yield fields[side]


def clue_documents(data: Path) -> Iterator[list[str]]:
    """CLUECorpusSmall documents: sentence lines, documents split by blank lines."""
    path = data / "corpora" / "CLUECorpusSmall_bert_sampled.txt"
    document: list[str] = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                document.append(line)
            elif document:
                yield document
                document = []
    if document:
        yield document


def build_corpus(data: Path, out: Path, zh_ratio: float) -> dict[str, object]:
    held_out = {
        normalise(t) for language in LANGUAGES for t in stsb_sentences(data, language, "dev")
    }
    seen: set[str] = set()
    lines: dict[str, list[str]] = {language: [] for language in LANGUAGES}
    size = dict.fromkeys(LANGUAGES, 0)
    duplicates = dev_overlap = 0

    def add(language: str, text: str) -> bool:
        nonlocal duplicates, dev_overlap
        text = normalise(text)
        if not text:
            return False
        if text in held_out:
            dev_overlap += 1
            return False
        if text in seen:  # STS-B repeats sentences across rows; names repeat across languages
            duplicates += 1
            return False
        seen.add(text)
        lines[language].append(text)
        size[language] += units(text, language)
        return True

    sources: dict[str, int] = {}
    # Line counts after which a document ends: each source block of a language (its sentences
    # are adjacent text of one origin) and each CLUECorpusSmall document.
    ends: dict[str, set[int]] = {language: set() for language in LANGUAGES}
    for language in LANGUAGES:
        before = len(lines[language])
        for text in stsb_sentences(data, language, "train"):
            add(language, text)
        sources[f"stsb-multi-mt/{language}-train"] = len(lines[language]) - before
        ends[language].add(len(lines[language]))
    for side, language in enumerate(("en", "zh")):
        before = len(lines[language])
        for text in news_commentary(data, side):
            add(language, text)
        sources[f"news-commentary/{language}"] = len(lines[language]) - before
        ends[language].add(len(lines[language]))
    budget = zh_ratio * max(size[language] for language in LANGUAGES if language != "zh")
    before, documents = len(lines["zh"]), 0
    for document in clue_documents(data):
        if size["zh"] + sum(units(text, "zh") for text in document) > budget:
            break
        documents += 1
        for text in document:
            add("zh", text)
        ends["zh"].add(len(lines["zh"]))
    sources["CLUECorpusSmall_bert (documents in file order)"] = len(lines["zh"]) - before
    partial = out.with_name(f".tmp-{out.name}")
    with partial.open("w", encoding="utf-8") as handle:
        # Grouped by language: full windows cut from the stream are then mostly monolingual.
        # A blank line ends a document, so `mlm` puts a separator there.
        for language in LANGUAGES:
            for count, text in enumerate(lines[language], start=1):
                handle.write(text + "\n" + ("\n" if count in ends[language] else ""))
    partial.replace(out)
    total = sum(size.values())
    return {
        "out": str(out),
        "lines": {language: len(lines[language]) for language in LANGUAGES},
        "units": size,
        "unit_share": {language: round(size[language] / total, 4) for language in LANGUAGES},
        "sources_lines": sources,
        "clue_documents": documents,
        "duplicates_dropped": duplicates,
        "train_occurrences_of_dev_sentences_dropped": dev_overlap,
        "total_lines": sum(len(texts) for texts in lines.values()),
        "documents": sum(len(language_ends - {0}) for language_ends in ends.values()),
        "zh_ratio": zh_ratio,
    }


def coverage(
    data: Path, tokenizer_path: Path, corpus: Path, per_language: int
) -> dict[str, object]:
    """Unknown-token rate per language on STS-B dev sentences that are not in the corpus."""
    from pretrainkit.tokenization import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_path)
    with corpus.open(encoding="utf-8") as handle:
        trained = {line.rstrip("\n") for line in handle}
    report: dict[str, object] = {}
    for language in LANGUAGES:
        held_out: list[str] = []
        in_corpus = 0
        for text in dict.fromkeys(normalise(t) for t in stsb_sentences(data, language, "dev")):
            if text in trained:  # the same sentence in train and dev: not held out
                in_corpus += 1
            elif len(held_out) < per_language:
                held_out.append(text)
        ids = [i for text in held_out for i in tokenizer.encode(text)]
        unknown = sum(1 for i in ids if i == tokenizer.unk_id)
        report[language] = {
            "sentences": len(held_out),
            "tokens": len(ids),
            "unknown": unknown,
            "unknown_rate": round(unknown / max(len(ids), 1), 5),
            "tokens_per_unit": round(
                len(ids) / max(sum(units(t, language) for t in held_out), 1), 3
            ),
            "dev_sentences_also_in_corpus": in_corpus,
        }
    return {
        "tokenizer": str(tokenizer_path),
        "vocab_size": tokenizer.vocab_size,
        "languages": report,
    }


def pawsx_split(data: Path, directory: Path, train_rows: int, seed: int) -> dict[str, object]:
    """Shuffle `pawsx/dev-en.tsv` with `seed`: the first `train_rows` train, the rest select."""
    path = data / "pawsx" / "dev-en.tsv"
    rows = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for line_number, row in enumerate(rows, start=1):
        if len(row.split("\t")) != 3 or row.rsplit("\t", 1)[1] not in ("0", "1"):
            raise SystemExit(f"{path}:{line_number}: expected s1<TAB>s2<TAB>0|1")
    if not 0 < train_rows < len(rows):
        raise SystemExit(f"--train-rows {train_rows} must be between 1 and {len(rows) - 1}")
    random.Random(seed).shuffle(rows)
    directory.mkdir(parents=True, exist_ok=True)
    parts = {"train": rows[:train_rows], "select": rows[train_rows:]}
    for name, part in parts.items():
        (directory / f"en-{name}.tsv").write_text("".join(r + "\n" for r in part), encoding="utf-8")
    positives = {name: sum(r.endswith("\t1") for r in part) for name, part in parts.items()}
    return {
        "source": str(path),
        "seed": seed,
        "rows": {name: len(part) for name, part in parts.items()},
        "positive": positives,
        "out": str(directory),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the data mirror (../shared/data)")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--out", type=Path, help="corpus file to write")
    mode.add_argument("--coverage", type=Path, metavar="TOKENIZER", help="tokenizer to measure")
    mode.add_argument("--pawsx-split", type=Path, metavar="DIR", help="folder for en-train/select")
    parser.add_argument("--zh-ratio", type=float, default=2.0, help="Chinese cap (see above)")
    parser.add_argument("--corpus", type=Path, help="the corpus (with --coverage)")
    parser.add_argument("--sentences", type=int, default=300, help="dev sentences per language")
    parser.add_argument("--train-rows", type=int, default=1600, help="PAWS-X rows for training")
    parser.add_argument("--seed", type=int, default=13, help="PAWS-X shuffle seed")
    args = parser.parse_args()
    if not (args.data / "stsb-multi-mt").is_dir():
        print(f"{args.data} has no stsb-multi-mt/: give the data mirror", file=sys.stderr)
        return 2
    if args.out is not None:
        if args.out.exists():
            print(f"{args.out} exists; give another --out", file=sys.stderr)
            return 2
        if args.zh_ratio <= 0:
            print("--zh-ratio must be positive", file=sys.stderr)
            return 2
        result = build_corpus(args.data, args.out, args.zh_ratio)
    elif args.coverage is not None:
        if args.corpus is None:
            print(
                "--coverage needs --corpus (dev sentences found in it are not held out)",
                file=sys.stderr,
            )
            return 2
        result = coverage(args.data, args.coverage, args.corpus, args.sentences)
    else:
        result = pawsx_split(args.data, args.pawsx_split, args.train_rows, args.seed)
    print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
