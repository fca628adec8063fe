"""Downstream regression data: STS-B CSV files (``sentence1,sentence2,score``, no header) or
task TSVs with a numeric label column; streams and batches with float scores."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from pretrainkit.errors import DataError
from pretrainkit.fileio import read_utf8
from pretrainkit.tasks.classification import (
    ClassificationData,
    ClassificationStream,
    classification_batches,
    read_classification_tsv,
)
from pretrainkit.tokenization import Tokenizer


def read_regression_file(path: str | Path, require_labels: bool = True) -> ClassificationData:
    """Read sentence pairs (or single texts) with a numeric score.

    ``.csv``: STS-B rows ``sentence1,sentence2,score`` (quoted as CSV, no header). Any other
    suffix: a task TSV as ``read_classification_tsv`` reads it, whose labels must be numbers.

    Raises:
        DataError: naming the file and line: a row without three fields, a score that is not a
            number, an empty file.
    """
    path = Path(path)
    if path.suffix != ".csv":
        data = read_classification_tsv(path, require_labels=require_labels)
        scores_of(data)  # every label must be a number
        return data
    text = read_utf8(path)
    texts_a, texts_b, labels = [], [], []
    for number, row in enumerate(csv.reader(io.StringIO(text, newline="")), start=1):
        if len(row) != 3:
            raise DataError(
                f"expected 3 comma-separated fields (sentence1,sentence2,score), got {len(row)}",
                path,
                number,
            )
        texts_a.append(row[0])
        texts_b.append(row[1])
        labels.append(row[2])
    if not texts_a:
        raise DataError("file is empty; expected rows sentence1,sentence2,score", path)
    data = ClassificationData(path, texts_a, texts_b, labels)
    scores_of(data)
    return data


def scores_of(data: ClassificationData) -> np.ndarray:
    """The labels as float32 scores; a DataError naming the line of the first non-number."""
    if data.labels is None:
        raise DataError("has no labels; regression needs a score column", data.path)
    offset = 1 if data.path.suffix == ".csv" else 2  # TSV rows start after the header
    scores = np.empty(len(data.labels), dtype=np.float32)
    for row, label in enumerate(data.labels):
        try:
            scores[row] = float(label)
        except ValueError:
            raise DataError(f"score {label!r} is not a number", data.path, row + offset) from None
        if not np.isfinite(scores[row]):
            raise DataError(f"score {label!r} is not finite", data.path, row + offset)
    return scores


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
