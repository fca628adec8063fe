"""``multi_label``: any number of labels per text or text pair (topics, emotions, tags).

Files are TSV rows ``labels<TAB>text_a[<TAB>text_b]`` with a header (or columns named by the
caller); ``labels`` is a comma-separated list. An empty field is a row with no label: it is kept
and trained as "none of the labels" (multi-label data such as toxicity tags has many of those).
A label written twice in one row is rejected (a DataError naming the line): it is almost always a
join gone wrong upstream, and dropping the copy would hide that. Spaces around labels are
stripped. The label set is the training file's; a label the training file lacks is an error in
the dev and test files.

The head is one sigmoid per label; a label is predicted when its probability reaches
``threshold``. With a dev set, ``tune`` sets the threshold that maximises dev micro-F1 (see
``tune_threshold``) so that ``task.json`` keeps it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretrainkit.config import TargetConfig
from pretrainkit.data.batching import collate
from pretrainkit.data.instances import RowStream
from pretrainkit.errors import ConfigError, DataError, closest
from pretrainkit.fileio import read_input
from pretrainkit.tasks.base import TASKS, Task
from pretrainkit.tasks.classification import ClassificationOptions, width_defaults
from pretrainkit.tasks.metrics import bernoulli_kl
from pretrainkit.tokenization import Tokenizer

log = logging.getLogger(__name__)

COLUMNS = ("labels", "text_a", "text_b")
_EXPECTED = "labels<TAB>text_a or labels<TAB>text_a<TAB>text_b"


@dataclass
class MultiLabelOptions(ClassificationOptions):
    threshold: float = 0.5
    """A label is predicted when its sigmoid probability is at least this. With
    --dev and --tune-threshold it is replaced by the dev set's best (recorded in task.json)."""
    tune_threshold: bool = True
    """With --dev, set --threshold to the value that maximises dev micro-F1."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)):
            raise ConfigError(f"threshold must be a number in (0, 1), got {self.threshold!r}")
        if not 0 < self.threshold < 1:
            raise ConfigError(f"threshold must be in (0, 1), got {self.threshold!r}")
        if not isinstance(self.tune_threshold, bool):
            raise ConfigError(f"tune_threshold must be true or false, got {self.tune_threshold!r}")


@dataclass
class MultiLabelData:
    """The rows of a multi-label file, column by column.

    Attributes:
        path: the file read.
        texts_a: the first text of each row.
        texts_b: the second text of each row (pairs), or None.
        labels: each row's labels as written (an empty list: no label), or None for a file
            without a labels column.
        first_line: the line of the file that holds row 0 (2 after a header, 1 without).
    """

    path: Path
    texts_a: list[str]
    texts_b: list[str] | None
    labels: list[list[str]] | None
    first_line: int = 2

    def __len__(self) -> int:
        return len(self.texts_a)


def read_multi_label_tsv(
    path: str | Path,
    label_set: list[str] | None = None,
    require_labels: bool = True,
    columns: Sequence[str] | str | None = None,
) -> MultiLabelData:
    """Read a TSV file with a header ``labels<TAB>text_a[<TAB>text_b]`` (any column order), or
    a file without a header whose fields ``columns`` names.

    Raises:
        DataError: naming the file and line: a bad header or ``columns``, a row with the wrong
            number of fields, an empty label inside the list (``a,,b``), a label written twice
            in a row, a label outside ``label_set``, bytes that are not UTF-8, an empty file.
    """
    path = Path(path)
    raw = read_input(path).split(b"\n")
    if raw[-1] == b"":
        raw.pop()  # the newline that ends the last row
    lines = [_decode(line, path, number) for number, line in enumerate(raw, start=1)]
    if not lines:
        raise DataError(f"file is empty; expected a header {_EXPECTED}", path)
    if columns is None:
        header, first_line = lines[0].lstrip("\ufeff").split("\t"), 2
        _check_names(header, path, require_labels, "the header", 1)
        rows = lines[1:]
    else:
        names = columns.split(",") if isinstance(columns, str) else list(columns)
        header, first_line = [name.strip() for name in names], 1
        _check_names(header, path, require_labels, "columns", None)
        if lines[0].lstrip("\ufeff").split("\t") == header:
            raise DataError("line 1 is a header; columns are for files without one", path, 1)
        rows = lines
    if not rows:
        raise DataError("the file has a header but no rows", path, 2)
    values: dict[str, list[str]] = {name: [] for name in header}
    for number, line in enumerate(rows, start=first_line):
        fields = line.split("\t")
        if len(fields) != len(header):
            raise DataError(
                f"expected {len(header)} tab-separated fields ({', '.join(header)}), "
                f"got {len(fields)}",
                path,
                number,
            )
        for name, value in zip(header, fields):
            values[name].append(value)
    labels = None
    if "labels" in values:
        allowed = set(label_set) if label_set is not None else None
        labels = [
            _parse_labels(field, allowed, label_set, path, number)
            for number, field in enumerate(values["labels"], start=first_line)
        ]
    return MultiLabelData(path, values["text_a"], values.get("text_b"), labels, first_line)


def _parse_labels(
    field: str, allowed: set[str] | None, label_set: list[str] | None, path: Path, number: int
) -> list[str]:
    if not field.strip():
        return []  # a row with no label
    labels = [label.strip() for label in field.split(",")]
    for label in labels:
        if not label:
            raise DataError(f"empty label in {field!r} (labels are comma-separated)", path, number)
        if labels.count(label) > 1:
            raise DataError(f"label {label!r} appears twice in {field!r}", path, number)
        if allowed is not None and label not in allowed:
            known = ", ".join(label_set or [])
            raise DataError(
                f"label {label!r} is not one of the training labels: {known}"
                f"{closest(label, allowed)}",
                path,
                number,
            )
    return labels


def _check_names(
    names: list[str], path: Path, require_labels: bool, what: str, line: int | None
) -> None:
    for name in names:
        if name not in COLUMNS:
            raise DataError(
                f"{what}: unknown column {name!r}{closest(name, COLUMNS)}; expected {_EXPECTED}",
                path,
                line,
            )
        if names.count(name) > 1:
            raise DataError(f"{what}: column {name!r} appears twice", path, line)
    for needed in ("text_a", "labels") if require_labels else ("text_a",):
        if needed not in names:
            raise DataError(f"{what} lacks the {needed} column; expected {_EXPECTED}", path, line)


def _decode(raw: bytes, path: Path, number: int) -> str:
    try:
        return raw.rstrip(b"\r").decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"not UTF-8 (byte {err.start} of the line)", path, number) from None


def sorted_labels(labels: set[str]) -> list[str]:
    """Labels sorted; numbers by value ("2" before "10")."""
    for number in (int, float):
        try:
            return sorted(labels, key=number)
        except ValueError:
            continue
    return sorted(labels)


# -- metrics and the threshold --------------------------------------------------------------


def probabilities(outputs: list[np.ndarray]) -> np.ndarray:
    """The rows' logits ``[n][L]`` → sigmoid probabilities ``[n, L]`` (float64)."""
    if not outputs:
        return np.zeros((0, 0))
    return torch.from_numpy(np.stack(outputs).astype(np.float64)).sigmoid().numpy()


def multi_label_metrics(predicted: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    """Micro-F1, macro-F1 and exact match of ``[n, L]`` 0/1 predictions against gold.

    Macro-F1 averages the labels that occur in gold or predictions (as ``macro_f1`` of the
    classification task does; scikit-learn's ``zero_division=np.nan``). With no label anywhere,
    in gold or predicted, both F1s are 1: nothing was to be found and nothing was wrongly found.
    """
    if len(gold) == 0:
        return {"micro_f1": 0.0, "macro_f1": 0.0, "exact_match": 0.0}
    p, g = np.asarray(predicted, dtype=bool), np.asarray(gold, dtype=bool)
    tp, fp, fn = (p & g).sum(0), (p & ~g).sum(0), (~p & g).sum(0)  # [L] each
    micro_denominator = 2 * tp.sum() + fp.sum() + fn.sum()
    per_label = 2 * tp + fp + fn
    present = per_label > 0
    return {
        "micro_f1": float(2 * tp.sum() / micro_denominator) if micro_denominator else 1.0,
        "macro_f1": float(np.mean(2 * tp[present] / per_label[present])) if present.any() else 1.0,
        "exact_match": float((p == g).all(1).mean()),
    }


def tune_threshold(outputs: list[np.ndarray], gold: list[np.ndarray]) -> float:
    """The probability threshold that maximises micro-F1 of ``outputs`` (logits) against the
    multi-hot ``gold``; among equally good ones, the one nearest 0.5.

    Every distinct cut of the sorted probabilities is tried at once: predicting the k most
    probable (row, label) cells gives micro-F1 ``2 tp_k / (k + positives)``. The threshold is
    the midpoint between the last cell kept and the first dropped, so it does not sit on a
    dev value.
    """
    scores = probabilities(outputs).ravel()
    truth = np.asarray(gold, dtype=bool).ravel()
    if scores.size == 0:
        return 0.5
    order = np.argsort(-scores, kind="stable")
    scores, truth = scores[order], truth[order]
    kept = np.arange(scores.size + 1)  # k cells predicted positive, k = 0..N
    tp = np.concatenate([[0], np.cumsum(truth)])
    positives = int(truth.sum())
    denominator = kept + positives
    f1 = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 1.0)
    # Cut between ranks k-1 and k only where the scores differ (ties are kept or dropped whole).
    valid = np.ones(kept.size, dtype=bool)
    valid[1:-1] = scores[:-1] > scores[1:]
    upper = np.concatenate([[1.0], scores])  # the last kept cell's score (1 before any)
    lower = np.concatenate([scores, [0.0]])  # the first dropped cell's score (0 after all)
    thresholds = np.clip((upper + lower) / 2, 1e-6, 1 - 1e-6)
    candidates = np.flatnonzero(valid)
    best = max(candidates, key=lambda k: (round(float(f1[k]), 12), -abs(thresholds[k] - 0.5)))
    return float(thresholds[best])


# -- streams and batches --------------------------------------------------------------------


def _instance(
    tokenizer: Tokenizer, a: list[int], b: list[int] | None, seq_length: int
) -> dict[str, np.ndarray]:
    input_ids, token_types = tokenizer.build_inputs(a, b, seq_length)
    return {
        "input_ids": np.asarray(input_ids, dtype=np.int64),
        "token_type_ids": np.asarray(token_types, dtype=np.int64),
    }


def _label_indices(data: MultiLabelData, label_set: list[str]) -> list[list[int]]:
    index = {label: i for i, label in enumerate(label_set)}
    rows = []
    for row, labels in enumerate(data.labels or []):
        for label in labels:
            if label not in index:
                raise DataError(
                    f"label {label!r} is not one of the labels: {', '.join(label_set)}",
                    data.path,
                    data.first_line + row,
                )
        rows.append([index[label] for label in labels])
    return rows


class MultiLabelStream(RowStream):
    """Endless stream of ``[CLS] a [SEP] (b [SEP])`` instances, reshuffled every epoch; the
    labels of an instance are its float multi-hot ``[L]`` (``MultiLabel.collate`` stacks them)."""

    def __init__(
        self,
        data: MultiLabelData,
        tokenizer: Tokenizer,
        label_set: list[str],
        seq_length: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        if data.labels is None:
            raise DataError("has no labels; training needs a labels column", data.path)
        self.start(len(data), seed, rank, world_size, data.path)
        self.tokenizer, self.seq_length, self.seed = tokenizer, seq_length, seed
        self.num_labels = len(label_set)
        self.labels = _label_indices(data, label_set)
        self.ids_a = tokenizer.encode_batch(data.texts_a)
        self.ids_b = tokenizer.encode_batch(data.texts_b) if data.texts_b is not None else None
        empty = sum(not labels for labels in self.labels)
        if empty:
            log.info("%s: %d of %d rows have no label", data.path, empty, len(data))

    def _inputs(self, row: int) -> dict[str, np.ndarray]:
        b = self.ids_b[row] if self.ids_b is not None else None
        return _instance(self.tokenizer, self.ids_a[row], b, self.seq_length)

    def __next__(self) -> dict[str, np.ndarray]:
        _, _, row = self.order.current()
        self.order.advance()
        hot = np.zeros(self.num_labels, dtype=np.float32)
        hot[self.labels[row]] = 1.0
        return self._inputs(row) | {"labels": hot}


@TASKS.register("multi_label")
class MultiLabel(Task):
    """Rows ``labels<TAB>text_a[<TAB>text_b]`` (comma-separated labels); one sigmoid per label,
    binary cross-entropy; micro-F1, macro-F1 and exact match; the prediction file is a task
    file with the predicted labels (``labels<TAB>text_a[<TAB>text_b]``)."""

    name = "multi_label"
    options_class = MultiLabelOptions
    metric_names = ("micro_f1", "macro_f1", "exact_match")

    def read(
        self, path: str | Path, require_labels: bool = True, columns: Sequence[str] | None = None
    ) -> MultiLabelData:
        return read_multi_label_tsv(
            path, label_set=self.labels, require_labels=require_labels, columns=columns
        )

    def fit_labels(self, train: MultiLabelData) -> None:
        if train.labels is None:
            raise DataError("the file has no labels column", train.path)
        found = {label for labels in train.labels for label in labels}
        if not found:
            raise DataError("no row has a label; the label set comes from this file", train.path)
        self.labels = sorted_labels(found)

    def _label_set(self) -> list[str]:
        if not self.labels:
            raise ConfigError("multi_label: the label set is not known yet (fit_labels)")
        return self.labels

    def stream(
        self, data: MultiLabelData, tokenizer: Tokenizer, seed: int, rank: int, world_size: int
    ) -> MultiLabelStream:
        return MultiLabelStream(
            data, tokenizer, self._label_set(), self.options.seq_length, seed, rank, world_size
        )

    def collate(self, instances: list[dict[str, np.ndarray]], pad_id: int) -> dict[str, Any]:
        """Pads the inputs and stacks the rows' multi-hot labels into ``[b, L]`` floats (the
        default collation would pad them to the input length like token labels)."""
        labels = torch.from_numpy(np.stack([instance["labels"] for instance in instances]))
        rest = [{k: v for k, v in instance.items() if k != "labels"} for instance in instances]
        return collate(rest, pad_id) | {"labels": labels}

    def batches(
        self, data: MultiLabelData, tokenizer: Tokenizer, batch_size: int
    ) -> Iterator[dict]:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        for start in range(0, len(data), batch_size):
            stop = min(start + batch_size, len(data))
            ids_a = tokenizer.encode_batch(data.texts_a[start:stop])
            ids_b = (
                tokenizer.encode_batch(data.texts_b[start:stop])
                if data.texts_b is not None
                else None
            )
            yield collate(
                [
                    _instance(tokenizer, a, ids_b[i] if ids_b else None, self.options.seq_length)
                    for i, a in enumerate(ids_a)
                ],
                tokenizer.pad_id,
            )

    def target(self) -> TargetConfig:
        options = {"labels": self._label_set(), "pooling": self.options.pooling}
        return TargetConfig("multi_label", {**options, "dropout": self.options.dropout})

    def row_outputs(self, logits: torch.Tensor, batch: dict) -> list[np.ndarray]:
        return list(logits.double().cpu().numpy())

    def gold(self, data: MultiLabelData) -> list[np.ndarray]:
        if data.labels is None:
            raise DataError("has no labels to score against", data.path)
        rows = _label_indices(data, self._label_set())
        hot = np.zeros((len(rows), len(self._label_set())), dtype=np.int64)
        for row, indices in enumerate(rows):
            hot[row, indices] = 1
        return list(hot)

    def predicted(self, outputs: list[np.ndarray]) -> np.ndarray:
        """``[n, L]`` booleans: the labels each row is given at the task's threshold."""
        return probabilities(outputs) >= self.options.threshold

    def metrics(self, outputs: list[np.ndarray], gold: list[np.ndarray]) -> dict[str, float]:
        if not outputs:
            return multi_label_metrics(np.zeros((0, 0)), np.zeros((0, 0)))
        return multi_label_metrics(self.predicted(outputs), np.stack(gold))

    def tunes_on_dev(self) -> bool:
        return bool(self.options.tune_threshold)

    def tune(self, outputs: list[np.ndarray], gold: list[np.ndarray]) -> bool:
        """Set the threshold that maximises micro-F1 on a dev set's outputs (when the
        ``tune_threshold`` option is on); True when the options changed.

        Fine-tuning calls it on every dev evaluation, the last one just before the model is
        saved, so that ``task.json`` records the threshold (the ``Task.tune`` hook)."""
        if not self.options.tune_threshold or not outputs:
            return False
        threshold = tune_threshold(outputs, gold)
        if threshold == self.options.threshold:
            return False
        log.info("multi_label: dev micro-F1 is best at threshold %.4f", threshold)
        self.options = dataclasses.replace(self.options, threshold=threshold)
        return True

    def prediction_lines(self, outputs: list[np.ndarray], data: MultiLabelData) -> list[str]:
        labels = self._label_set()
        header = "labels\ttext_a" + ("\ttext_b" if data.texts_b is not None else "")
        lines = [header]
        for row, chosen in enumerate(self.predicted(outputs) if outputs else []):
            texts = [data.texts_a[row]] + ([data.texts_b[row]] if data.texts_b is not None else [])
            names = ",".join(label for label, on in zip(labels, chosen) if on)
            lines.append("\t".join([names, *texts]))
        return lines

    def divergence(self, reference: list[np.ndarray], outputs: list[np.ndarray]) -> float:
        return bernoulli_kl(reference, outputs)  # each output is its own sigmoid

    def train_defaults(self, hidden_size: int, steps: int) -> dict[str, Any]:
        return width_defaults(hidden_size, steps)
