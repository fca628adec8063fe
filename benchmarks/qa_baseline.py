"""A QA baseline without a model: answer with the context sentence that shares the most
characters with the question; scored with the ``qa`` task's EM and F1.

    python benchmarks/qa_baseline.py --data ../shared/data/cmrc2018/dev.json --articles 424:
    python benchmarks/qa_baseline.py --data ../shared/data/cmrc2018/dev.json --articles :424 \
        --write /tmp/cmrc-train.json

``--articles START:STOP`` keeps a slice of the file's articles (CMRC2018's train split is not in
the data mirror, so a model is fine-tuned on one part of dev and scored on the other);
``--write`` saves that slice as SQuAD JSON for ``pretrainkit finetune``. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
import unicodedata
from collections import Counter
from pathlib import Path

from pretrainkit.tasks.qa_format import read_squad
from pretrainkit.tasks.qa_metrics import qa_metrics

# A sentence ends after CJK or Latin end punctuation, or at a line break.
_SENTENCE_END = re.compile(r"(?<=[。！？；!?;\n])|(?<=\.)(?=\s)")


def sentences(context: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(context) if s.strip()]


def _characters(text: str) -> Counter[str]:
    # Punctuation and spaces are shared by every sentence: they say nothing about the question.
    return Counter(c for c in text.lower() if not c.isspace() and unicodedata.category(c)[0] != "P")


def overlap_answer(question: str, context: str) -> str:
    """The first of the context's sentences with the largest character overlap (as multisets)
    with the question."""
    wanted = _characters(question)
    best, best_score = "", -1
    for sentence in sentences(context):
        score = sum((wanted & _characters(sentence)).values())
        if score > best_score:
            best, best_score = sentence, score
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, type=Path, help="SQuAD-format JSON")
    parser.add_argument("--articles", default=":", help="START:STOP slice of the articles")
    parser.add_argument("--write", type=Path, help="save the selected articles here as JSON")
    args = parser.parse_args()
    start, _, stop = args.articles.partition(":")
    document = json.loads(args.data.read_text(encoding="utf-8"))
    chosen = {
        **document,
        "data": document["data"][slice(int(start or 0), int(stop) if stop else None)],
    }
    text = json.dumps(chosen, ensure_ascii=False)
    if args.write is not None:
        if args.write.exists():
            raise SystemExit(f"{args.write} exists; not replacing it")
        args.write.write_text(text, encoding="utf-8")
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:  # the reader takes a file
        path = Path(folder) / "articles.json"
        path.write_text(text, encoding="utf-8")
        data = read_squad(path)
    if data.answers is None:
        raise SystemExit(f"{args.data}: no answers")
    predictions = [overlap_answer(q, c) for q, c in zip(data.questions, data.contexts)]
    scores = qa_metrics(predictions, data.answers)
    result = {
        "data": str(args.data),
        "articles": args.articles,
        "questions": len(data),
        "baseline": "context sentence with the largest character overlap with the question",
        **{k: round(v, 4) for k, v in scores.items()},
        "seconds": round(time.perf_counter() - began, 2),
    }
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
