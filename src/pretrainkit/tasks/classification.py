"""``classification``: one label per text or text pair (sentiment, NLI, paraphrase, ...)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretrainkit.config import TargetConfig
from pretrainkit.errors import ConfigError, DataError
from pretrainkit.tasks.base import TASKS, PackOptions, Task, TaskOptions
from pretrainkit.tasks.metrics import classification_metrics
from pretrainkit.tasks.tsv import (
    ClassificationData,
    ClassificationStream,
    classification_batches,
    label_set_of,
    read_classification_tsv,
)
from pretrainkit.tokenization import Tokenizer

__all__ = [
    "Classification",
    "SoftmaxOutputs",
    "ClassificationData",
    "ClassificationOptions",
    "PackableOptions",
    "ClassificationStream",
    "classification_batches",
    "label_set_of",
    "read_classification_tsv",
]

POOLINGS = ("first", "mean", "max", "last")


@dataclass
class ClassificationOptions(TaskOptions):
    pooling: str = "mean"
    """How the head reads the sequence: first (the [CLS] token), mean, max or last token. Mean
    is the default: it works from a briefly pre-trained model, where [CLS] has learned little."""
    dropout: float = 0.1
    """Dropout before the head's projection."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")


@dataclass
class PackableOptions(ClassificationOptions, PackOptions):
    """``ClassificationOptions`` and ``--pack`` (one sequence per example: classification,
    regression)."""


def refuse_other_tasks(data: ClassificationData) -> None:
    """A file that fits these columns but plainly belongs to another task is refused with a
    hint, instead of training a classifier with one class per row (msra_ner's `text_a<TAB>label`
    rows carry one tag per word)."""
    if data.labels is None or len(data) < 10:
        return
    per_word = sum(
        len(label.split()) > 1 and len(label.split()) == len(text.split())
        for label, text in zip(data.labels, data.texts_a)
    )
    if per_word > len(data) // 2:
        raise DataError(
            f"{per_word} of {len(data)} rows have one label per word of text_a (e.g. "
            f"{data.labels[0][:40]!r}): this looks like a tagging file; use --task tagging",
            data.path,
        )
    distinct = len(set(data.labels))
    if distinct > max(20, len(data) // 2):
        numeric = all(_is_number(label) for label in data.labels[:100])
        hint = "--task regression for scores" if numeric else "the right column and task"
        raise DataError(
            f"{distinct} distinct labels in {len(data)} rows: a classifier needs several rows "
            f"per class; use {hint}",
            data.path,
        )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def width_defaults(hidden_size: int, steps: int) -> dict[str, Any]:
    """Learning rate by model width and a 10 % warmup: small models from a short pre-training
    need a larger step than BERT-base's usual 2e-5-5e-5 (see the Defaults section of README)."""
    lr = 3e-4 if hidden_size <= 256 else 1e-4 if hidden_size <= 512 else 3e-5
    return {"lr": lr, "warmup": steps // 10}


class SoftmaxOutputs:
    """What the single-label tasks share once the head gives one logit per label (text, image,
    speech): argmax metrics, the ``label<TAB>probability`` prediction file and the training
    defaults by width. The task supplies ``_label_set()``."""

    def _label_set(self) -> list[str]:
        raise NotImplementedError

    def metrics(self, outputs: list[np.ndarray], gold: list[int]) -> dict[str, float]:
        predicted = np.array([int(row.argmax()) for row in outputs], dtype=np.int64)
        return classification_metrics(
            predicted, np.array(gold, dtype=np.int64), len(self._label_set())
        )

    def prediction_lines(self, outputs: list[np.ndarray], data: Any = None) -> list[str]:
        labels = self._label_set()
        lines = ["label\tprobability"]
        for row in outputs:
            probs = torch.from_numpy(row).softmax(-1).numpy()
            lines.append(f"{labels[int(probs.argmax())]}\t{probs.max():.6f}")
        return lines

    def train_defaults(self, hidden_size: int, steps: int) -> dict[str, Any]:
        return width_defaults(hidden_size, steps)


@TASKS.register("classification")
class Classification(SoftmaxOutputs, Task):
    """Rows ``label<TAB>text_a[<TAB>text_b]``; softmax head; accuracy and macro-F1; the
    prediction file holds ``label<TAB>probability``."""

    name = "classification"
    options_class = PackableOptions
    metric_names = ("accuracy", "macro_f1")

    def read(
        self, path: str | Path, require_labels: bool = True, columns: Sequence[str] | None = None
    ) -> ClassificationData:
        return read_classification_tsv(
            path, label_set=self.labels, require_labels=require_labels, columns=columns
        )

    def fit_labels(self, train: ClassificationData) -> None:
        refuse_other_tasks(train)
        self.labels = label_set_of(train)

    def _label_set(self) -> list[str]:
        if not self.labels:
            raise ConfigError("classification: the label set is not known yet (fit_labels)")
        return self.labels

    def stream(
        self, data: ClassificationData, tokenizer: Tokenizer, seed: int, rank: int, world_size: int
    ) -> ClassificationStream:
        return ClassificationStream(
            data, tokenizer, self._label_set(), self.options.seq_length, seed, rank, world_size
        )

    def batches(
        self, data: ClassificationData, tokenizer: Tokenizer, batch_size: int
    ) -> Iterator[dict]:
        for batch in classification_batches(
            data, tokenizer, self.labels, self.options.seq_length, batch_size
        ):
            batch.pop("labels", None)
            yield batch

    def target(self) -> TargetConfig:
        options = {"labels": self._label_set(), "pooling": self.options.pooling}
        return TargetConfig("classification", {**options, "dropout": self.options.dropout})

    def row_outputs(self, logits: torch.Tensor, batch: dict) -> list[np.ndarray]:
        return list(logits.double().cpu().numpy())

    def gold(self, data: ClassificationData) -> list[int]:
        if data.labels is None:
            raise DataError("has no labels to score against", data.path)
        index = {label: i for i, label in enumerate(self._label_set())}
        return [index[label] for label in data.labels]
