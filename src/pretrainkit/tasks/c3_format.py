"""The C3 file format (``multiple_choice``): JSON documents
``[[context sentences], [{question, choice, answer[, id]}], id]``, one entry per question.

ChID and other multiple-choice sets go through ``multiple_choice`` once written in this form.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pretrainkit.errors import DataError
from pretrainkit.fileio import read_input

_EXPECTED = "a JSON list of documents [[context sentences], [{question, choice, answer}], id]"


@dataclass
class MultipleChoiceData:
    """The questions of a C3-style file, one entry per question in file order.

    Attributes:
        path: the file read.
        ids: each question's id: its own ``id`` key, else ``<document id>-<question number>``
            (C3 dev repeats 26 document ids, so ids need not be unique; rows keep file order).
        contexts: the document's sentences joined by spaces (shared by its questions).
        questions: the question texts.
        choices: each question's choices (2 to ``num_choices``).
        answers: the index of each answer among its choices (the first, should a choice be
            repeated: identical sequences score alike and argmax takes the first), or None for
            a file without answers.
    """

    path: Path
    ids: list[str]
    contexts: list[str]
    questions: list[str]
    choices: list[list[str]]
    answers: list[int] | None

    def __len__(self) -> int:
        return len(self.ids)


def read_c3(path: str | Path, num_choices: int, require_labels: bool = True) -> MultipleChoiceData:
    """Read a C3 JSON file: ``[[context sentences], [{question, choice, answer}], id]`` per
    document.

    Raises:
        DataError: naming the file, and the document (number and id) and question: not JSON,
            another structure, fewer than 2 or more than ``num_choices`` choices, an answer that
            is not one of the choices (or none, with ``require_labels``), no question at all.
    """
    path = Path(path)
    try:
        text = read_input(path).decode("utf-8-sig")  # -sig: a BOM is not JSON
    except UnicodeDecodeError as err:
        raise DataError(f"not UTF-8 (byte offset {err.start})", path) from None
    try:
        documents = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(
            f"not valid JSON ({err.msg}); expected {_EXPECTED}", path, err.lineno
        ) from None
    except RecursionError:
        raise DataError(f"JSON nested too deeply; expected {_EXPECTED}", path) from None
    if not isinstance(documents, list):
        raise DataError(f"expected {_EXPECTED}, got a JSON {type(documents).__name__}", path)
    data = MultipleChoiceData(path, [], [], [], [], [])
    answers: list[int | None] = []
    for number, document in enumerate(documents, start=1):
        doc_id, context, questions = _document(document, f"document {number}", path)
        where = f"document {number} (id {doc_id!r})"
        for q, item in enumerate(questions, start=1):
            question, choices, answer = _question(item, f"{where}, question {q}", path)
            if len(choices) > num_choices:
                raise DataError(
                    f"{where}, question {q}: {len(choices)} choices, more than num_choices "
                    f"{num_choices} (raise --num-choices)",
                    path,
                )
            if answer is None and require_labels:
                raise DataError(f"{where}, question {q}: no answer", path)
            own_id = item.get("id")
            data.ids.append(str(own_id) if isinstance(own_id, (str, int)) else f"{doc_id}-{q}")
            data.contexts.append(context)
            data.questions.append(question)
            data.choices.append(choices)
            answers.append(choices.index(answer) if answer is not None else None)
    if not data.ids:
        raise DataError(f"no questions; expected {_EXPECTED}", path)
    # A file to predict on may hold answers for some questions only: then they are not used.
    data.answers = [a for a in answers if a is not None] if None not in answers else None
    return data


def _document(document: Any, where: str, path: Path) -> tuple[str, str, list]:
    if not (isinstance(document, list) and len(document) == 3):
        raise DataError(f"{where}: expected [[context sentences], [questions], id]", path)
    sentences, questions, doc_id = document
    if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)):
        raise DataError(f"{where}: the id (third item) must be a string, got {doc_id!r}", path)
    where = f"{where} (id {doc_id!r})"
    if not (isinstance(sentences, list) and all(isinstance(s, str) for s in sentences)):
        raise DataError(f"{where}: the context (first item) must be a list of strings", path)
    if not isinstance(questions, list):
        raise DataError(f"{where}: the questions (second item) must be a list", path)
    return str(doc_id), " ".join(sentences), questions


def _question(item: Any, where: str, path: Path) -> tuple[str, list[str], str | None]:
    if not isinstance(item, dict):
        raise DataError(f"{where}: expected an object {{question, choice, answer}}", path)
    question, choices, answer = item.get("question"), item.get("choice"), item.get("answer")
    if not isinstance(question, str):
        raise DataError(f"{where}: 'question' must be a string, got {question!r}", path)
    if not (isinstance(choices, list) and all(isinstance(c, str) for c in choices)):
        raise DataError(f"{where}: 'choice' must be a list of strings, got {choices!r}", path)
    if len(choices) < 2:
        raise DataError(f"{where}: {len(choices)} choice(s); a question needs at least 2", path)
    if answer is not None and answer not in choices:
        raise DataError(f"{where}: the answer {answer!r} is not one of the choices {choices}", path)
    return question, choices, answer
