"""Downstream classification data: TSV files with a header, streams and batches over them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pretrainkit.data.batching import collate
from pretrainkit.data.instances import EpochOrder, InstanceStream, check_state
from pretrainkit.errors import ConfigError, DataError, closest
from pretrainkit.tokenization import Tokenizer

COLUMNS = ("label", "text_a", "text_b")
_EXPECTED = "label<TAB>text_a or label<TAB>text_a<TAB>text_b"


@dataclass
class ClassificationData:
    """The rows of a classification file, column by column.

    Attributes:
        path: the file read.
        texts_a: the first text of each row.
        texts_b: the second text of each row (sentence pairs), or None.
        labels: the label of each row as written, or None for a file without labels.
    """

    path: Path
    texts_a: list[str]
    texts_b: list[str] | None
    labels: list[str] | None

    def __len__(self) -> int:
        return len(self.texts_a)


def read_classification_tsv(
    path: str | Path, label_set: list[str] | None = None, require_labels: bool = True
) -> ClassificationData:
    """Read a TSV file whose header is `label\\ttext_a` or `label\\ttext_a\\ttext_b`.

    Columns may come in any order. Without `require_labels` the label column may be absent
    (files to predict on). Every row is kept, so row i is line i + 2 of the file.

    Args:
        path: the TSV file (UTF-8).
        label_set: when given, every label must be one of these.
        require_labels: the file must have a label column.

    Raises:
        DataError: naming the file and line: a bad header, a row with the wrong number of
            fields, a label outside `label_set`, bytes that are not UTF-8, or an empty file.
    """
    path = Path(path)
    try:
        raw_lines = path.read_bytes().split(b"\n")
    except FileNotFoundError:
        raise DataError("file not found", path) from None
    if raw_lines[-1] == b"":
        raw_lines.pop()  # the newline that ends the last row
    if not raw_lines:
        raise DataError(f"file is empty; expected a header {_EXPECTED}", path)
    lines = (_decode(raw, path, number) for number, raw in enumerate(raw_lines, start=1))
    header = next(lines).lstrip("\ufeff").split("\t")  # a BOM would hide the first name
    _check_header(header, path, require_labels)
    columns: dict[str, list[str]] = {name: [] for name in header}
    allowed = set(label_set) if label_set is not None else None
    for number, line in enumerate(lines, start=2):
        fields = line.split("\t")
        if len(fields) != len(header):
            raise DataError(
                f"expected {len(header)} tab-separated fields ({', '.join(header)}), "
                f"got {len(fields)}",
                path,
                number,
            )
        for name, value in zip(header, fields):
            columns[name].append(value)
        if "label" in columns:
            label = columns["label"][-1]
            if allowed is not None and label not in allowed:
                raise DataError(
                    f"label {label!r} is not one of the labels: {', '.join(label_set or [])}",
                    path,
                    number,
                )
            if label == "":
                raise DataError("the label is empty", path, number)
    if not columns["text_a"]:
        raise DataError("the file has a header but no rows", path, 2)
    return ClassificationData(
        path=path,
        texts_a=columns["text_a"],
        texts_b=columns.get("text_b"),
        labels=columns.get("label"),
    )


def label_set_of(data: ClassificationData) -> list[str]:
    """The distinct labels, sorted; numbers sort by value ("2" before "10")."""
    if data.labels is None:
        raise DataError("the file has no label column", data.path)
    labels = set(data.labels)
    for number in (int, float):
        try:
            return sorted(labels, key=number)
        except ValueError:
            continue
    return sorted(labels)


class ClassificationStream(InstanceStream):
    """Endless stream of `[CLS] a [SEP] (b [SEP])` instances, reshuffled every epoch.

    Texts are tokenized once up front (classification sets are small). Instances carry a 0-d
    `labels` value, the index of the label in `label_set`.
    """

    def __init__(
        self,
        data: ClassificationData,
        tokenizer: Tokenizer,
        label_set: list[str],
        seq_length: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        if data.labels is None:
            raise DataError("has no labels; training needs a label column", data.path)
        if len(data) < world_size:
            raise DataError(
                f"{len(data)} rows cannot be shared by {world_size} processes", data.path
            )
        self.tokenizer, self.seq_length, self.seed = tokenizer, seq_length, seed
        self.labels = _label_ids(data, label_set)
        self.ids_a = tokenizer.encode_batch(data.texts_a)
        self.ids_b = tokenizer.encode_batch(data.texts_b) if data.texts_b is not None else None
        self.order = EpochOrder(len(data), seed, rank, world_size)

    def __next__(self) -> dict[str, np.ndarray]:
        _, _, row = self.order.current()
        self.order.advance()
        return _instance(self.tokenizer, self.ids_a, self.ids_b, row, self.seq_length) | {
            "labels": np.asarray(self.labels[row], dtype=np.int64)
        }

    def _identity(self) -> dict:
        return {
            "size": len(self.ids_a),
            "seq_length": self.seq_length,
            "seed": self.seed,
            "rank": self.order.rank,
            "world_size": self.order.world_size,
        }

    def state_dict(self) -> dict:
        return {**self._identity(), **self.order.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        check_state(state, self._identity())
        self.order.load_state_dict(state)


def classification_batches(
    data: ClassificationData,
    tokenizer: Tokenizer,
    label_set: list[str] | None,
    seq_length: int,
    batch_size: int,
) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of the rows in file order (for evaluation and prediction), the last one short.

    Batches have a `labels` key (`[b]` class indices) only when the data has labels.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    if data.labels is not None and label_set is None:
        raise ConfigError("label_set is needed to turn the labels into class indices")
    labels = (
        _label_ids(data, label_set) if data.labels is not None and label_set is not None else None
    )
    for start in range(0, len(data), batch_size):
        stop = min(start + batch_size, len(data))
        ids_a = tokenizer.encode_batch(data.texts_a[start:stop])
        ids_b = (
            tokenizer.encode_batch(data.texts_b[start:stop]) if data.texts_b is not None else None
        )
        instances = []
        for row in range(stop - start):
            instance = _instance(tokenizer, ids_a, ids_b, row, seq_length)
            if labels is not None:
                instance["labels"] = np.asarray(labels[start + row], dtype=np.int64)
            instances.append(instance)
        yield collate(instances, tokenizer.pad_id)


def _instance(
    tokenizer: Tokenizer,
    ids_a: list[list[int]],
    ids_b: list[list[int]] | None,
    row: int,
    seq_length: int,
) -> dict[str, np.ndarray]:
    b = ids_b[row] if ids_b is not None else None
    input_ids, token_types = tokenizer.build_inputs(ids_a[row], b, seq_length)
    return {
        "input_ids": np.asarray(input_ids, dtype=np.int64),
        "token_type_ids": np.asarray(token_types, dtype=np.int64),
    }


def _label_ids(data: ClassificationData, label_set: list[str]) -> list[int]:
    index = {label: i for i, label in enumerate(label_set)}
    ids = []
    for row, label in enumerate(data.labels or []):
        if label not in index:
            raise DataError(
                f"label {label!r} is not one of the labels: {', '.join(label_set)}",
                data.path,
                row + 2,  # rows start on line 2, after the header
            )
        ids.append(index[label])
    return ids


def _decode(raw: bytes, path: Path, number: int) -> str:
    try:
        return raw.rstrip(b"\r").decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"not UTF-8 (byte {err.start} of the line)", path, number) from None


def _check_header(header: list[str], path: Path, require_labels: bool) -> None:
    for name in header:
        if name not in COLUMNS:
            raise DataError(
                f"unknown column {name!r}{closest(name, COLUMNS)}; expected a header {_EXPECTED}",
                path,
                1,
            )
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise DataError(f"column {duplicated[0]!r} appears twice in the header", path, 1)
    if "text_a" not in header or (require_labels and "label" not in header):
        missing = "text_a" if "text_a" not in header else "label"
        raise DataError(f"the header lacks the {missing} column; expected {_EXPECTED}", path, 1)
