"""Answers and scores of the ``qa`` task: n-best decoding of the best span over a question's
windows, and the exact match and F1 of SQuAD (Latin script) and CMRC2018 (CJK characters).
"""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pretrainkit.tasks.qa_windows import CJK_CHAR

if TYPE_CHECKING:
    from pretrainkit.tasks.qa import QAOptions  # qa imports this module


# -- decoding -----------------------------------------------------------------------------------


@dataclass
class WindowOutput:
    """The head's output for one window.

    Attributes:
        question: the question's row in the data.
        start_logits, end_logits: ``[1 + c]`` float64: the no-answer position (0), then the
            window's ``c`` context tokens.
        char_starts, char_ends: ``[c]`` the context characters of each context token.
    """

    question: int
    start_logits: np.ndarray
    end_logits: np.ndarray
    char_starts: np.ndarray
    char_ends: np.ndarray


@dataclass
class QAGold:
    """A question's gold answers and its context (decoding cuts predictions from it)."""

    context: str
    answers: tuple[str, ...]


def best_span(
    start: np.ndarray, end: np.ndarray, n_best: int, max_length: int
) -> tuple[float, int, int] | None:
    """``(score, first, last)`` of the best span among the ``n_best`` starts and ends with
    ``first <= last < first + max_length``; the score is the sum of the two logits."""
    if len(start) == 0:
        return None
    firsts = np.argsort(-start, kind="stable")[:n_best]
    lasts = np.argsort(-end, kind="stable")[:n_best]
    scores = start[firsts][:, None] + end[lasts][None, :]  # [n, n]
    width = lasts[None, :] - firsts[:, None]
    scores = np.where((width >= 0) & (width < max_length), scores, -np.inf)
    if not np.isfinite(scores).any():
        return None
    i, j = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return float(scores[i, j]), int(firsts[i]), int(lasts[j])


def decode_answers(
    outputs: Sequence[WindowOutput], contexts: Sequence[str], options: QAOptions
) -> list[str]:
    """One answer per question: the best span over its windows (first window on a tie), or ""
    when questions may be unanswerable and the no-answer score (its lowest over the windows)
    beats that span by more than ``null_threshold``."""
    best: dict[int, tuple[float, int, int]] = {}
    null: dict[int, float] = {}
    for out in outputs:
        q = out.question
        null[q] = min(null.get(q, math.inf), float(out.start_logits[0] + out.end_logits[0]))
        span = best_span(
            out.start_logits[1:], out.end_logits[1:], options.n_best, options.max_answer_length
        )
        if span is not None and (q not in best or span[0] > best[q][0]):
            best[q] = (span[0], int(out.char_starts[span[1]]), int(out.char_ends[span[2]]))
    answers = []
    for q, context in enumerate(contexts):
        if q not in best:
            answers.append("")
            continue
        score, first, last = best[q]
        if options.unanswerable == "yes" and null[q] - score > options.null_threshold:
            answers.append("")
        else:
            answers.append(context[first:last])
    return answers


# -- metrics --------------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_ASCII_PUNCTUATION = set(string.punctuation)


def normalize_english(text: str) -> str:
    """SQuAD's normalisation: lower case, no ASCII punctuation, no articles, single spaces."""
    text = "".join(c for c in text.lower() if c not in _ASCII_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _is_punctuation(char: str) -> bool:
    return char in _ASCII_PUNCTUATION or unicodedata.category(char)[0] == "P"


def cjk_tokens(text: str) -> list[str]:
    """CMRC2018's mixed segmentation: lower case, punctuation dropped, every CJK character a
    token, runs of other characters split at whitespace."""
    tokens: list[str] = []
    run: list[str] = []
    for char in text.lower():
        if _is_punctuation(char):
            char = " "
        if CJK_CHAR.match(char):
            tokens += "".join(run).split()
            run = []
            tokens.append(char)
        else:
            run.append(char)
    return tokens + "".join(run).split()


def _longest_common_run(a: list[str], b: list[str]) -> int:
    """Length of the longest common contiguous run of tokens (CMRC2018's F1 counts it)."""
    best = 0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0] * (len(b) + 1)
        for j, y in enumerate(b):
            if x == y:
                current[j + 1] = previous[j] + 1
                best = max(best, current[j + 1])
        previous = current
    return best


def answer_scores(prediction: str, gold: str) -> tuple[float, float]:
    """``(exact match, F1)`` of one prediction against one gold answer.

    Where either holds a CJK character: CMRC2018's scoring (tokens of ``cjk_tokens``; EM on
    the tokens, F1 from their longest common run). Else SQuAD's (``normalize_english``; F1
    from the overlap of the bags of words). An empty side scores 1 only against an empty side.
    """
    if CJK_CHAR.search(prediction) or CJK_CHAR.search(gold):
        predicted, expected = cjk_tokens(prediction), cjk_tokens(gold)
        same = _longest_common_run(predicted, expected)
    else:
        predicted, expected = normalize_english(prediction).split(), normalize_english(gold).split()
        same = sum((Counter(predicted) & Counter(expected)).values())
    exact = float(predicted == expected)
    if not predicted or not expected:
        return exact, exact
    if same == 0:
        return exact, 0.0
    precision, recall = same / len(predicted), same / len(expected)
    return exact, 2 * precision * recall / (precision + recall)


def qa_metrics(predictions: Sequence[str], golds: Sequence[Sequence[str]]) -> dict[str, float]:
    """Mean F1 and exact match over the questions, each the best over its gold answers."""
    if not golds:
        return {"f1": 0.0, "exact_match": 0.0}
    f1 = exact = 0.0
    for prediction, answers in zip(predictions, golds, strict=True):
        scores = [answer_scores(prediction, gold) for gold in answers]
        exact += max(s[0] for s in scores)
        f1 += max(s[1] for s in scores)
    return {"f1": f1 / len(golds), "exact_match": exact / len(golds)}
