"""C3 without a model: pick the choice sharing the most characters with the context + question.

    python benchmarks/c3_baseline.py --data ../shared/data/c3/dev.json --split-out /tmp/c3

C3 ships only its dev set, so the RESULTS experiment trains on its first 80 % of documents and
reports on the last 20 % (documents, not questions, so no context is in both). With
``--split-out`` this script writes that split as ``train.json`` and ``report.json`` (C3 JSON,
as ``pretrainkit finetune --task multiple_choice`` reads it). It reports on the report part and
on the whole file: the chance level (mean of 1 / choices), always-the-first-choice, and the
overlap rule: the choice with the most distinct characters (punctuation and spaces left out)
that also occur in the context or the question; ties go to the earlier choice. The rule was
fixed before looking at any score. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np


def characters(text: str) -> set[str]:
    """The distinct characters of ``text`` that carry content (no punctuation, no spaces)."""
    return {c for c in text if not c.isspace() and not unicodedata.category(c).startswith("P")}


def overlap_choice(context: str, question: str, choices: list[str]) -> int:
    seen = characters(context) | characters(question)
    scores = [len(characters(choice) & seen) for choice in choices]
    return int(np.argmax(scores))  # the first of the best: ties go to the earlier choice


def questions(documents: list[Any]) -> list[tuple[str, str, list[str], int]]:
    """``(context, question, choices, answer index)`` of every question."""
    rows = []
    for sentences, items, _ in documents:
        context = " ".join(sentences)
        for item in items:
            rows.append(
                (context, item["question"], item["choice"], item["choice"].index(item["answer"]))
            )
    return rows


def scores(documents: list[Any]) -> dict[str, float | int]:
    rows = questions(documents)
    answers = np.array([answer for *_, answer in rows])
    overlap = np.array([overlap_choice(c, q, choices) for c, q, choices, _ in rows])
    return {
        "questions": len(rows),
        "chance": round(float(np.mean([1 / len(choices) for _, _, choices, _ in rows])), 4),
        "first_choice": round(float(np.mean(answers == 0)), 4),
        "overlap": round(float(np.mean(overlap == answers)), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="C3 dev.json")
    parser.add_argument("--train-share", type=float, default=0.8, help="documents to train on")
    parser.add_argument("--split-out", type=Path, help="write train.json and report.json here")
    args = parser.parse_args()
    documents = json.loads(args.data.read_text(encoding="utf-8"))
    cut = int(len(documents) * args.train_share)
    train, report = documents[:cut], documents[cut:]
    if args.split_out is not None:
        args.split_out.mkdir(parents=True, exist_ok=True)
        for name, part in (("train", train), ("report", report)):
            text = json.dumps(part, ensure_ascii=False)
            (args.split_out / f"{name}.json").write_text(text + "\n", encoding="utf-8")
    result = {
        "data": str(args.data),
        "documents": {"train": len(train), "report": len(report)},
        "report": scores(report),
        "all": scores(documents),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
