"""Metrics of generated text against a reference: exact match, ROUGE-L and keyword F1.

ROUGE-L is computed over units: every CJK character is a unit of its own (Chinese has no
spaces, so a word-level ROUGE would count a whole sentence as one word), and every other run of
non-space characters is one unit. On space-separated text this is rouge-score's ROUGE-L F1
(checked in the tests); on Chinese it is the character-level ROUGE-L the CSL benchmark reports.
Every metric is the mean over rows, as a fraction.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# CJK ideographs (unified, extension A, compatibility) and the CJK punctuation and full-width
# forms, each a unit of its own.
_CJK = "\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
_UNITS = re.compile(f"[{_CJK}]|[^\\s{_CJK}]+")
_CJK_SPACE = re.compile(f"(?<=[{_CJK}]) +(?=[{_CJK}])")


def units(text: str) -> list[str]:
    """The units ROUGE-L compares: each CJK character, and each other run of non-space
    characters (``"abc 中文x"`` → ``["abc", "中", "文", "x"]``)."""
    return _UNITS.findall(text)


def normalize(text: str) -> str:
    """``text`` without surrounding spaces and without the spaces a WordPiece decoder puts
    between CJK characters (``"中 文"`` → ``"中文"``); other spaces are kept, collapsed."""
    return _CJK_SPACE.sub("", " ".join(text.split()))


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of ``a`` and ``b`` (O(len a * len b))."""
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 of one prediction (LCS over ``units``); 0 when either side is empty."""
    predicted, wanted = units(prediction), units(reference)
    common = lcs_length(predicted, wanted)
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(wanted)
    return 2 * precision * recall / (precision + recall)


def keywords(text: str, separator: str) -> set[str]:
    """The set of non-empty, stripped items of a ``separator``-joined list."""
    return {item for part in text.split(separator) if (item := normalize(part))}


def keyword_f1(prediction: str, reference: str, separator: str) -> float:
    """F1 of the predicted keyword set against the reference set (order and repeats do not
    count); 1 when both are empty."""
    predicted, wanted = keywords(prediction, separator), keywords(reference, separator)
    if not predicted and not wanted:
        return 1.0
    common = len(predicted & wanted)
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(wanted)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, reference: str) -> float:
    """1 when the texts are equal after ``normalize``, else 0."""
    return float(normalize(prediction) == normalize(reference))


METRICS = ("rouge_l", "accuracy", "keyword_f1")
"""The metric names text2text accepts (``accuracy`` is exact match)."""


def text_metrics(
    predictions: Sequence[str],
    references: Sequence[str],
    names: Sequence[str],
    separator: str = "_",
) -> dict[str, float]:
    """Each metric of ``names`` (from ``METRICS``) as the mean over rows.

    Raises:
        ValueError: the two lists differ in length, are empty, or a name is unknown.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        raise ValueError("no rows to score")
    scorers = {
        "rouge_l": rouge_l,
        "accuracy": exact_match,
        "keyword_f1": lambda p, r: keyword_f1(p, r, separator),
    }
    result = {}
    for name in names:
        if name not in scorers:
            raise ValueError(f"unknown metric {name!r}; metrics: {', '.join(METRICS)}")
        scores = [scorers[name](p, r) for p, r in zip(predictions, references, strict=True)]
        result[name] = sum(scores) / len(scores)
    return result
