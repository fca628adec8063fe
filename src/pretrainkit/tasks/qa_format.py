"""SQuAD-format JSON for the ``qa`` task (SQuAD 1.1 / 2.0, CMRC2018): a file's questions, their
contexts and gold answers, and each first answer located in its context (the training target).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pretrainkit.errors import DataError
from pretrainkit.fileio import read_input

# The task's logger: the reader's messages keep the name they had in ``tasks.qa``.
log = logging.getLogger("pretrainkit.tasks.qa")

SQUAD_LAYOUT = 'SQuAD JSON {"data": [{"paragraphs": [{"context", "qas": [...]}]}]}'


@dataclass
class QAData:
    """The questions of a SQuAD-format file, one list entry per question.

    Attributes:
        path: the file read.
        ids: each question's id (unique).
        questions: the question texts.
        contexts: each question's context (questions of one paragraph share the string).
        answers: the gold answer texts of each question as written (``("",)`` for a question
            without an answer), or None for a file read without answers.
        spans: the character span ``(start, end)`` of each question's first answer found in
            its context (the training target), or None where there is none (no answer, or
            answers that are not in the context); None for a file read without answers.
    """

    path: Path
    ids: list[str]
    questions: list[str]
    contexts: list[str]
    answers: list[tuple[str, ...]] | None = None
    spans: list[tuple[int, int] | None] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def unanswerable(self, row: int) -> bool:
        return self.answers is not None and not any(self.answers[row])


def read_squad(path: str | Path, require_answers: bool = True) -> QAData:
    """Read SQuAD-format JSON: ``data`` → ``paragraphs`` → ``context``, ``qas`` → ``id``,
    ``question``, ``answers`` [{``text``, ``answer_start``}] (and SQuAD 2.0's ``is_impossible``).

    An answer whose text is not at its ``answer_start`` is moved to the nearest place where the
    text occurs in the context (counted in the log). An answer whose text is nowhere in the
    context (CMRC2018 writes ``answer_start`` -1 for them) stays a gold answer for scoring but
    cannot be a training target (counted). A question with ``is_impossible`` true, an empty
    ``answers`` list or only empty answer texts has no answer.

    Args:
        path: the JSON file (UTF-8).
        require_answers: every question must have its answers; without it they are not read
            (files to predict on, e.g. CMRC2018's test file with placeholder answers).

    Raises:
        DataError: naming the file and the question id (or the JSON path): not UTF-8, not
            JSON, a wrong structure, a missing or mistyped field, a repeated id.
    """
    path = Path(path)
    raw = read_input(path)
    if not raw.strip():
        raise DataError(f"file is empty; expected {SQUAD_LAYOUT}", path)
    try:
        document = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as error:
        raise DataError(f"not UTF-8 (byte offset {error.start})", path) from None
    except json.JSONDecodeError as error:
        message = f"not valid JSON: {error.msg} (column {error.colno}); expected {SQUAD_LAYOUT}"
        raise DataError(message, path, error.lineno) from None
    except RecursionError:
        raise DataError("not valid JSON: nested too deeply", path) from None
    articles = document.get("data") if isinstance(document, dict) else None
    if not isinstance(articles, list):
        raise DataError(
            f"the top level must be an object with a list 'data'; expected {SQUAD_LAYOUT}", path
        )
    data = QAData(
        path, [], [], [], [] if require_answers else None, [] if require_answers else None
    )
    seen: set[str] = set()
    counts = Counter[str]()
    for i, article in enumerate(articles):
        for j, paragraph in enumerate(_field(article, "paragraphs", list, f"data[{i}]", path)):
            where = f"data[{i}].paragraphs[{j}]"
            context = _field(paragraph, "context", str, where, path)
            for k, qa in enumerate(_field(paragraph, "qas", list, where, path)):
                qid = _field(qa, "id", str, f"{where}.qas[{k}]", path)
                if qid in seen:
                    raise DataError(f"question id {qid!r} appears twice", path)
                if not qid or any(c in qid for c in "\t\r\n"):
                    # Ids key the prediction file's lines (id<TAB>answer).
                    raise DataError(f"{where}.qas[{k}]: bad question id {qid!r}", path)
                seen.add(qid)
                data.ids.append(qid)
                data.questions.append(_field(qa, "question", str, f"question {qid!r}", path))
                data.contexts.append(context)
                if data.answers is not None and data.spans is not None:
                    texts, span = _answers(qa, qid, context, path, counts)
                    data.answers.append(texts)
                    data.spans.append(span)
    if not data.ids:
        raise DataError(f"the file has no questions; expected {SQUAD_LAYOUT}", path)
    if counts["moved"]:
        log.info("%s: %d answer(s) were not at their answer_start and were moved to the "
                 "nearest occurrence of their text", path, counts["moved"])  # fmt: skip
    if counts["absent"]:
        log.warning("%s: %d answer(s) do not occur in their context: gold answers for scoring, "
                    "not training targets", path, counts["absent"])  # fmt: skip
    return data


def _field(obj: Any, key: str, kind: type, where: str, path: Path) -> Any:
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected an object, got {type(obj).__name__}", path)
    if key not in obj:
        raise DataError(f"{where}: missing {key!r}", path)
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool):  # JSON true is no number
        raise DataError(f"{where}: {key!r} must be {_KINDS[kind]}, got {value!r:.60}", path)
    return value


_KINDS = {str: "a string", int: "an integer", list: "a list"}


def _answers(
    qa: dict, qid: str, context: str, path: Path, counts: Counter[str]
) -> tuple[tuple[str, ...], tuple[int, int] | None]:
    """The gold texts of one question and the character span of its first locatable answer."""
    where = f"question {qid!r}"
    impossible = qa.get("is_impossible", False)
    if not isinstance(impossible, bool):
        raise DataError(f"{where}: 'is_impossible' must be true or false", path)
    if impossible:  # SQuAD 2.0 lists plausible answers elsewhere; answers is empty
        return ("",), None
    answers = _field(qa, "answers", list, where, path)
    texts: list[str] = []
    span = None
    for n, answer in enumerate(answers):
        text = _field(answer, "text", str, f"{where} answer {n}", path)
        start = _field(answer, "answer_start", int, f"{where} answer {n}", path)
        texts.append(text)
        if not text:
            continue
        found = locate(context, text, start)
        if found is None:
            counts["absent"] += 1
        elif found != start:
            counts["moved"] += 1
        if span is None and found is not None:
            span = (found, found + len(text))
    return (tuple(texts) if any(texts) else ("",)), span


def locate(context: str, text: str, start: int) -> int | None:
    """Where ``text`` is in ``context``: at ``start`` when it is there, else its occurrence
    nearest to ``start`` (the earlier on a tie); None when it does not occur."""
    if start >= 0 and context.startswith(text, start):
        return start
    found = []
    at = context.find(text)
    while at >= 0:
        found.append(at)
        at = context.find(text, at + 1)
    return min(found, key=lambda p: (abs(p - start), p)) if found else None
