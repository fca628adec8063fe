"""Task files of rows ``label, text_a[, text_b]``: TSV files (with a header, or columns named by
the caller), and the streams and batches over them that classification and regression share."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pretrainkit.data.batching import collate
from pretrainkit.data.instances import RowStream
from pretrainkit.errors import ConfigError, DataError, closest
from pretrainkit.fileio import read_input
from pretrainkit.tokenization import Tokenizer

COLUMNS = ("label", "text_a", "text_b")
_EXPECTED = "label<TAB>text_a or label<TAB>text_a<TAB>text_b"
_HEADERLESS = "a file without a header needs its columns named (columns=label,text_a)"


@dataclass
class ClassificationData:
    """The rows of a classification file, column by column.

    Attributes:
        path: the file read.
        texts_a: the first text of each row.
        texts_b: the second text of each row (sentence pairs), or None.
        labels: the label of each row as written, or None for a file without labels.
        first_line: the line of the file that holds row 0 (2 after a header, 1 without).
    """

    path: Path
    texts_a: list[str]
    texts_b: list[str] | None
    labels: list[str] | None
    first_line: int = 2

    def __len__(self) -> int:
        return len(self.texts_a)


def read_classification_tsv(
    path: str | Path,
    label_set: list[str] | None = None,
    require_labels: bool = True,
    columns: Sequence[str] | str | None = None,
) -> ClassificationData:
    """Read a TSV file whose header is `label\\ttext_a` or `label\\ttext_a\\ttext_b`, or a file
    without a header whose columns are named by `columns`.

    Columns may come in any order. Without `require_labels` the label column may be absent
    (files to predict on). Every row is kept, so row i is line `first_line + i` of the file.

    Args:
        path: the TSV file (UTF-8).
        label_set: when given, every label must be one of these.
        require_labels: the file must have a label column.
        columns: for a file without a header (SST-2's `label<TAB>sentence` rows): the name of
            each field, in order, from `label`, `text_a`, `text_b` (a sequence, or one string
            `"label,text_a"`); the first line is then a row. `text_a` is required, and `label`
            unless `require_labels` is false.

    Raises:
        DataError: naming the file and line: a bad header or bad `columns`, a row with the
            wrong number of fields, a label outside `label_set`, bytes that are not UTF-8, a
            file that cannot be read, or an empty file.
    """
    path = Path(path)
    names = check_columns(columns, path, require_labels) if columns is not None else None
    raw_lines = _read_lines(path)
    if raw_lines[-1] == b"":
        raw_lines.pop()  # the newline that ends the last row
    if not raw_lines:
        what = f"rows {'<TAB>'.join(names)}" if names else f"a header {_EXPECTED}"
        raise DataError(f"file is empty; expected {what}", path)
    lines: Iterator[str] = (
        _decode(raw, path, number) for number, raw in enumerate(raw_lines, start=1)
    )
    first = next(lines).lstrip("\ufeff")  # a BOM would hide the first name
    if names is None:
        header, first_line = first.split("\t"), 2
        _check_header(header, path, require_labels)
    else:
        header, first_line = list(names), 1
        if first.split("\t") == header:
            raise DataError(
                f"line 1 is a header ({', '.join(header)}); columns are for files without one",
                path,
                1,
            )
        lines = _chain(first, lines)
    values: dict[str, list[str]] = {name: [] for name in header}
    allowed = set(label_set) if label_set is not None else None
    for number, line in enumerate(lines, start=first_line):
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
        if "label" in values:
            label = values["label"][-1]
            if allowed is not None and label not in allowed:
                raise DataError(
                    f"label {label!r} is not one of the labels: {', '.join(label_set or [])}",
                    path,
                    number,
                )
            if label == "":
                raise DataError("the label is empty", path, number)
    if not values["text_a"]:
        raise DataError("the file has a header but no rows", path, 2)
    return ClassificationData(
        path=path,
        texts_a=values["text_a"],
        texts_b=values.get("text_b"),
        labels=values.get("label"),
        first_line=first_line,
    )


def check_columns(
    columns: Sequence[str] | str, path: str | Path | None = None, require_labels: bool = True
) -> tuple[str, ...]:
    """Validate the column names of a file without a header; returns them as a tuple.

    Raises:
        DataError: (naming `path` when given) an unknown or repeated name, or a missing
            `text_a` (or `label`, with `require_labels`).
    """
    if isinstance(columns, str):
        names = tuple(name.strip() for name in columns.split(","))
    else:
        names = tuple(columns)
    allowed = ", ".join(COLUMNS)
    for name in names:
        if not isinstance(name, str) or name not in COLUMNS:
            suggestion = closest(str(name), COLUMNS)
            raise DataError(
                f"columns: unknown column name {name!r}{suggestion}; allowed names: {allowed}",
                path,
            )
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise DataError(f"columns: {duplicated[0]!r} is named twice in {list(names)}", path)
    for needed in ("text_a", "label") if require_labels else ("text_a",):
        if needed not in names:
            raise DataError(
                f"columns: {list(names)} lacks {needed!r}; allowed names: {allowed}", path
            )
    return names


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


class ClassificationStream(RowStream):
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
        self.start(len(data), seed, rank, world_size, data.path)
        self.tokenizer, self.seq_length, self.seed = tokenizer, seq_length, seed
        self.labels = _label_ids(data, label_set)
        self.ids_a = tokenizer.encode_batch(data.texts_a)
        self.ids_b = tokenizer.encode_batch(data.texts_b) if data.texts_b is not None else None

    def __next__(self) -> dict[str, np.ndarray]:
        _, _, row = self.order.current()
        self.order.advance()
        return _instance(self.tokenizer, self.ids_a, self.ids_b, row, self.seq_length) | {
            "labels": np.asarray(self.labels[row], dtype=np.int64)
        }


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
                row + data.first_line,
            )
        ids.append(index[label])
    return ids


def _read_lines(path: Path) -> list[bytes]:
    """The file's lines as bytes (split on newlines only); OS errors as one DataError."""
    return read_input(path).split(b"\n")


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    yield first
    yield from rest


def _decode(raw: bytes, path: Path, number: int) -> str:
    try:
        return raw.rstrip(b"\r").decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"not UTF-8 (byte {err.start} of the line)", path, number) from None


def _check_header(header: list[str], path: Path, require_labels: bool) -> None:
    for name in header:
        if name not in COLUMNS:
            raise DataError(
                f"unknown column {name!r}{closest(name, COLUMNS)}; expected a header "
                f"{_EXPECTED}; {_HEADERLESS}",
                path,
                1,
            )
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise DataError(f"column {duplicated[0]!r} appears twice in the header", path, 1)
    if "text_a" not in header or (require_labels and "label" not in header):
        missing = "text_a" if "text_a" not in header else "label"
        raise DataError(f"the header lacks the {missing} column; expected {_EXPECTED}", path, 1)
