"""Downstream regression data: STS-B CSV files (``sentence1,sentence2,score``, no header) or
task TSVs with a numeric label column; streams and batches with float scores."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretrainkit.config import TargetConfig
from pretrainkit.errors import DataError
from pretrainkit.fileio import read_utf8
from pretrainkit.tasks.base import TASKS, Task
from pretrainkit.tasks.classification import PackableOptions, width_defaults
from pretrainkit.tasks.metrics import regression_metrics
from pretrainkit.tasks.tsv import (
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


@TASKS.register("regression")
class Regression(Task):
    """A score per text or text pair (STS-B): a linear head on the pooled encoder output, mean
    squared error; Spearman and Pearson; the prediction file holds ``score``."""

    name = "regression"
    options_class = PackableOptions
    metric_names = ("spearman", "pearson")

    def read(
        self, path: str | Path, require_labels: bool = True, columns: Sequence[str] | None = None
    ) -> ClassificationData:
        return read_regression_file(path, require_labels=require_labels, columns=columns)

    def stream(
        self, data: ClassificationData, tokenizer: Tokenizer, seed: int, rank: int, world_size: int
    ) -> RegressionStream:
        seq_length = self.options.seq_length
        return RegressionStream(data, tokenizer, seq_length, seed, rank, world_size)

    def batches(
        self, data: ClassificationData, tokenizer: Tokenizer, batch_size: int
    ) -> Iterator[dict]:
        unlabelled = replace(data, labels=None)
        yield from regression_batches(unlabelled, tokenizer, self.options.seq_length, batch_size)

    def target(self) -> TargetConfig:
        options = {"pooling": self.options.pooling, "dropout": self.options.dropout}
        return TargetConfig("regression", options)

    def row_outputs(self, logits: torch.Tensor, batch: dict) -> list[float]:
        return [float(x) for x in logits.double().cpu().reshape(-1)]

    def gold(self, data: ClassificationData) -> list[float]:
        return [float(x) for x in scores_of(data)]

    def metrics(self, outputs: list[float], gold: list[float]) -> dict[str, float]:
        return regression_metrics(np.array(outputs), np.array(gold))

    def prediction_lines(self, outputs: list[float], data: Any = None) -> list[str]:
        return ["score"] + [f"{value:.6f}" for value in outputs]

    def divergence(self, reference: list[float], outputs: list[float]) -> float:
        return float(np.mean((np.array(reference) - np.array(outputs)) ** 2))

    def train_defaults(self, hidden_size: int, steps: int) -> dict[str, Any]:
        return width_defaults(hidden_size, steps)
