"""``speech_classification``: one label per recording (spoken digits, keywords, speakers).

The task file is a TSV with the header ``label<TAB>audio`` (``tasks/speech_format.py`` reads it
and holds what the speech tasks share); the head pools the encoded frames.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretrainkit.config import TargetConfig
from pretrainkit.errors import ConfigError, DataError
from pretrainkit.tasks.base import TASKS, Task
from pretrainkit.tasks.classification import POOLINGS, SoftmaxOutputs
from pretrainkit.tasks.speech_format import (
    SpeechData,
    SpeechOptions,
    SpeechStream,
    check_feature_width,
    collate_features,
    feature_batches,
    read_speech_tsv,
)
from pretrainkit.tokenization import Tokenizer


@dataclass
class SpeechClassificationOptions(SpeechOptions):
    pooling: str = "mean"
    """How the head reads the encoded frames: first, mean, max or last."""
    dropout: float = 0.1
    """Dropout before the head's projection."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")


@TASKS.register("speech_classification")
class SpeechClassification(SoftmaxOutputs, Task):
    """Rows ``label<TAB>audio``; softmax head over the encoded frames; accuracy and macro-F1;
    the prediction file holds ``label<TAB>probability``."""

    name = "speech_classification"
    options_class = SpeechClassificationOptions
    metric_names = ("accuracy", "macro_f1")

    def read(
        self, path: str | Path, require_labels: bool = True, columns: Sequence[str] | None = None
    ) -> SpeechData:
        if columns is not None:
            raise ConfigError("speech_classification files have a header; drop --columns")
        data = read_speech_tsv(path, "label", require_labels, self.options)
        if data.labels is not None and self.labels is not None:
            self._indices(data)  # labels outside the model's set are an error here, not later
        return data

    def prepare_model(self, base: Any) -> None:
        check_feature_width(base, self.options.num_mel_bins)

    def fit_labels(self, train: SpeechData) -> None:
        if train.labels is None:
            raise DataError("has no label column", train.path)
        self.labels = _sorted_labels(set(train.labels))

    def _label_set(self) -> list[str]:
        if not self.labels:
            raise ConfigError("speech_classification: the label set is not known yet")
        return self.labels

    def _indices(self, data: SpeechData) -> list[int]:
        index = {label: i for i, label in enumerate(self._label_set())}
        for row, label in enumerate(data.labels or []):
            if label not in index:
                raise DataError(
                    f"label {label!r} is not one of the labels: {', '.join(index)}",
                    data.path,
                    row + data.first_line,
                )
        return [index[label] for label in data.labels or []]

    def stream(
        self, data: SpeechData, tokenizer: Tokenizer, seed: int, rank: int, world_size: int
    ) -> SpeechStream:
        if data.labels is None:
            raise DataError("has no labels; training needs a label column", data.path)
        return SpeechStream(data, self._indices(data), self.options, seed, rank, world_size)

    def collate(self, instances: list[dict[str, np.ndarray]], pad_id: int) -> dict[str, Any]:
        return collate_features(instances, pad_id)

    def batches(self, data: SpeechData, tokenizer: Tokenizer, batch_size: int) -> Iterator[dict]:
        return feature_batches(data, batch_size)

    def target(self) -> TargetConfig:
        options = {"labels": self._label_set(), "pooling": self.options.pooling}
        return TargetConfig("classification", {**options, "dropout": self.options.dropout})

    def row_outputs(self, logits: torch.Tensor, batch: dict) -> list[np.ndarray]:
        return list(logits.double().cpu().numpy())

    def gold(self, data: SpeechData) -> list[int]:
        if data.labels is None:
            raise DataError("has no labels to score against", data.path)
        return self._indices(data)


def _sorted_labels(labels: set[str]) -> list[str]:
    """Numbers sort by value ("2" before "10"), anything else as text."""
    try:
        return sorted(labels, key=float)
    except ValueError:
        return sorted(labels)
