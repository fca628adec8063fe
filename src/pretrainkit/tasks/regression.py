"""Downstream regression data: STS-B CSV files (``sentence1,sentence2,score``, no header) or
task TSVs with a numeric label column; streams and batches with float scores."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from pretrainkit.errors import DataError
from pretrainkit.fileio import read_utf8
from pretrainkit.tasks.classification import (
    ClassificationData,
    ClassificationStream,
    check_columns,
    classification_batches,
    read_classification_tsv,
)
from pretrainkit.tokenization import Tokenizer

# STS-B's CSV rows: sentence1,sentence2,score.
CSV_COLUMNS = ("text_a", "text_b", "label")


def read_regression_file(
    path: str | Path,
    require_labels: bool = True,
    columns: Sequence[str] | str | None = None,
) -> ClassificationData:
    """Read sentence pairs (or single texts) with a numeric score.

    ``.csv``: rows without a header, quoted as CSV; by default STS-B's
    ``sentence1,sentence2,score`` (``columns`` ``text_a,text_b,label``). Any other suffix: a task
    TSV as ``read_classification_tsv`` reads it (with a header, or headerless with
    ``columns``), whose labels must be numbers.

    Args:
        path: the file (UTF-8).
        require_labels: the file must have a score (``label``) column; without it a file may
            lack one (files to predict on).
        columns: the name of each field of a file without a header, in order, from ``label``
            (the score), ``text_a``, ``text_b``; see ``read_classification_tsv``.

    Raises:
        DataError: naming the file and line: a row with the wrong number of fields, a score
            that is not a finite number, bad ``columns``, an empty file.
    """
    path = Path(path)
    if path.suffix != ".csv":
        data = read_classification_tsv(path, require_labels=require_labels, columns=columns)
        if data.labels is not None:
            scores_of(data)  # every label must be a number
        return data
    names = check_columns(columns if columns is not None else CSV_COLUMNS, path, require_labels)
    text = read_utf8(path)
    values: dict[str, list[str]] = {name: [] for name in names}
    reader = csv.reader(io.StringIO(text, newline=""))
    line = 1  # where the current row starts (a quoted field may span lines)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            raise DataError(f"not valid CSV ({error})", path, reader.line_num) from None
        if len(row) != len(names):
            raise DataError(
                f"expected {len(names)} comma-separated fields ({','.join(names)}), got {len(row)}",
                path,
                line,
            )
        for name, value in zip(names, row):
            values[name].append(value)
        if "label" in values:
            _score(values["label"][-1], path, line)
        line = reader.line_num + 1
    if not values["text_a"]:
        raise DataError(f"file is empty; expected rows {','.join(names)}", path)
    return ClassificationData(
        path, values["text_a"], values.get("text_b"), values.get("label"), first_line=1
    )


def scores_of(data: ClassificationData) -> np.ndarray:
    """The labels as float32 scores; a DataError naming the line of the first non-number.

    Lines are counted from ``data.first_line`` (exact unless a quoted CSV field spans lines;
    ``read_regression_file`` checks CSV scores with their exact lines as it reads).
    """
    if data.labels is None:
        raise DataError("has no labels; regression needs a score column", data.path)
    scores = np.empty(len(data.labels), dtype=np.float32)
    for row, label in enumerate(data.labels):
        scores[row] = _score(label, data.path, row + data.first_line)
    return scores


def _score(label: str, path: Path, line: int) -> float:
    try:
        value = float(label)
    except ValueError:
        raise DataError(f"score {label!r} is not a number", path, line) from None
    # Beyond float32's range the score would become inf in the batches.
    if not math.isfinite(value) or abs(value) > float(np.finfo(np.float32).max):
        raise DataError(f"score {label!r} is not a finite float32 number", path, line)
    return value


class RegressionStream(ClassificationStream):
    """The classification stream with float ``labels`` (the row's score)."""

    def __init__(
        self,
        data: ClassificationData,
        tokenizer: Tokenizer,
        seq_length: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.scores = scores_of(data)
        one_class = replace(data, labels=["0"] * len(data))
        super().__init__(one_class, tokenizer, ["0"], seq_length, seed, rank, world_size)

    def __next__(self) -> dict[str, np.ndarray]:
        _, _, row = self.order.current()
        instance = super().__next__()
        instance["labels"] = np.asarray(self.scores[row], dtype=np.float32)
        return instance


def regression_batches(
    data: ClassificationData, tokenizer: Tokenizer, seq_length: int, batch_size: int
) -> Iterator[dict[str, torch.Tensor]]:
    """Batches in file order; ``labels`` (float ``[b]``) when the data has scores."""
    scores = scores_of(data) if data.labels is not None else None
    start = 0
    for batch in classification_batches(
        replace(data, labels=None), tokenizer, None, seq_length, batch_size
    ):
        size = len(batch["input_ids"])
        if scores is not None:
            batch["labels"] = torch.from_numpy(scores[start : start + size].copy())
        start += size
        yield batch
