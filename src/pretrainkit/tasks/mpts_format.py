"""Text pairs judged under several perspectives: the MPTS reader, metrics and the shared task.

Two file formats, told apart by their header:

- MPTS: ``id<TAB>texta<TAB>textb<TAB><perspective>...`` (the 27 film genres of the MPTS
  set). A perspective value is 1 (the two texts are similar under it), 0 or -1 (they are not;
  MPTS writes -1 where only one text has the genre, 0 where neither does: both are negatives
  for a "similar under p" head). Any other value is a DataError.
- A plain pair file ``label<TAB>text_a<TAB>text_b`` (any column order, optional ``id``) with a
  0/1 label: one perspective, named ``label``; a header-less file names its fields with
  ``columns``.

The perspectives are the header's, in file order; a dev or test file must hold the training
file's (any order: its columns are put in the training order).

``PerspectiveTask`` holds what ``siamese`` and ``cross_encoder`` share: reading, gold,
metrics (per-perspective accuracy, F1, ROC AUC; support-weighted F1 first) and the prediction
file ``id<TAB><probability per perspective>``. They differ only in how a pair reaches the
model and in the head.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretrainkit.data.instances import EpochOrder, RowStream
from pretrainkit.errors import ConfigError, DataError, closest
from pretrainkit.fileio import read_input
from pretrainkit.tasks.base import Task
from pretrainkit.tasks.classification import ClassificationOptions, width_defaults
from pretrainkit.tasks.metrics import bernoulli_kl
from pretrainkit.tokenization import Tokenizer

MPTS_TEXTS = ("id", "texta", "textb")
PAIR_COLUMNS = ("id", "label", "text_a", "text_b")
PAIR_PERSPECTIVE = "label"
_EXPECTED = "id<TAB>texta<TAB>textb<TAB><perspectives> (MPTS) or label<TAB>text_a<TAB>text_b"
_MPTS_VALUES = {"-1": -1, "0": 0, "1": 1}
_PAIR_VALUES = {"0": 0, "1": 1}


@dataclass
class PerspectiveOptions(ClassificationOptions):
    threshold: float = 0.5
    """A pair counts as similar under a perspective when its probability reaches this."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)):
            raise ConfigError(f"threshold must be a number in (0, 1), got {self.threshold!r}")
        if not 0 < self.threshold < 1:
            raise ConfigError(f"threshold must be in (0, 1), got {self.threshold!r}")


@dataclass
class PairData:
    """The rows of a pair file, column by column.

    Attributes:
        path: the file read.
        ids: each row's id (the ``id`` column, else its row number from 1).
        texts_a, texts_b: the two texts of each row.
        values: each row's value per perspective as written (-1, 0 or 1), or None for a file
            without labels.
        perspectives: the perspective names, in the order of ``values`` (a tuple, so that
            ``Task.subset`` never mistakes it for a per-row list).
        first_line: the line of the file that holds row 0.
    """

    path: Path
    ids: list[str]
    texts_a: list[str]
    texts_b: list[str]
    values: list[list[int]] | None
    perspectives: tuple[str, ...]
    first_line: int = 2

    def __len__(self) -> int:
        return len(self.texts_a)

    def gold(self) -> np.ndarray:
        """``[n, P]`` 0/1: 1 where the pair is similar under the perspective."""
        if self.values is None:
            raise DataError("has no labels to score against", self.path)
        return (np.asarray(self.values, dtype=np.int64).reshape(len(self), -1) == 1).astype(
            np.int64
        )


def read_pairs(
    path: str | Path,
    perspectives: Sequence[str] | None = None,
    require_labels: bool = True,
    columns: Sequence[str] | str | None = None,
) -> PairData:
    """Read an MPTS or plain pair file (see the module docstring).

    Args:
        perspectives: the training perspectives; a file's must be the same set (reordered to
            these), and a file without labels takes them as its names.
        columns: the fields of a header-less plain pair file (MPTS files name their
            perspectives in the header, so they always have one).

    Raises:
        DataError: naming the file and line: a missing column, a value outside {-1, 0, 1}
            (MPTS) or {0, 1} (pairs), a row with the wrong number of fields, other
            perspectives than training's, bytes that are not UTF-8, an empty file.
    """
    path = Path(path)
    raw = read_input(path).split(b"\n")
    if raw and raw[-1] == b"":
        raw.pop()  # the newline that ends the last row
    lines = [_decode(line, path, number) for number, line in enumerate(raw, start=1)]
    if not lines:
        raise DataError(f"file is empty; expected a header {_EXPECTED}", path)
    if columns is None:
        header, rows, first_line, header_line = (
            lines[0].lstrip("\ufeff").split("\t"),
            lines[1:],
            2,
            1,
        )
    else:
        names = columns.split(",") if isinstance(columns, str) else list(columns)
        header, rows, first_line, header_line = [n.strip() for n in names], lines, 1, None
    mpts = header[:3] == list(MPTS_TEXTS) or "texta" in header
    if mpts and columns is not None:
        raise ConfigError("MPTS files name their perspectives in a header; drop --columns")
    text_names = ("texta", "textb") if mpts else ("text_a", "text_b")
    labelled = _check_header(header, mpts, require_labels, path, header_line)
    if not rows:
        raise DataError("the file has a header but no rows", path, first_line)
    found = tuple(header[3:]) if mpts else (PAIR_PERSPECTIVE,) if labelled else ()
    order = _order(found, perspectives, path, header_line) if labelled else []
    allowed = _MPTS_VALUES if mpts else _PAIR_VALUES
    where = {name: i for i, name in enumerate(header)}
    value_columns = [where[name] for name in found]
    ids, texts_a, texts_b, values = [], [], [], []
    for number, line in enumerate(rows, start=first_line):
        fields = line.split("\t")
        if len(fields) != len(header):
            raise DataError(
                f"expected {len(header)} tab-separated fields, got {len(fields)}", path, number
            )
        ids.append(fields[where["id"]] if "id" in where else str(number - first_line + 1))
        texts_a.append(fields[where[text_names[0]]])
        texts_b.append(fields[where[text_names[1]]])
        if labelled:
            row = []
            for column in value_columns:
                value = fields[column].strip()
                if value not in allowed:
                    raise DataError(
                        f"{header[column]}: value {fields[column]!r} is not one of "
                        f"{', '.join(allowed)}",
                        path,
                        number,
                    )
                row.append(allowed[value])
            values.append([row[i] for i in order])
    kept = tuple(found[i] for i in order) if labelled else tuple(perspectives or ())
    return PairData(path, ids, texts_a, texts_b, values if labelled else None, kept, first_line)


def _check_header(
    header: list[str], mpts: bool, require_labels: bool, path: Path, line: int | None
) -> bool:
    """Check the columns; True when the file carries labels."""
    for name in header:
        if header.count(name) > 1:
            raise DataError(f"column {name!r} appears twice", path, line)
    if mpts:
        if header[:3] != list(MPTS_TEXTS):
            raise DataError(
                f"an MPTS header starts id, texta, textb; got {', '.join(header[:3])}", path, line
            )
        if len(header) == 3 and require_labels:
            raise DataError("the header names no perspective column after textb", path, line)
        return len(header) > 3
    for name in header:
        if name not in PAIR_COLUMNS:
            raise DataError(
                f"unknown column {name!r}{closest(name, PAIR_COLUMNS)}; expected {_EXPECTED}",
                path,
                line,
            )
    needed = ("label", "text_a", "text_b") if require_labels else ("text_a", "text_b")
    for name in needed:
        if name not in header:
            raise DataError(f"the header lacks the {name} column; expected {_EXPECTED}", path, line)
    return "label" in header


def _order(
    found: tuple[str, ...], wanted: Sequence[str] | None, path: Path, line: int | None
) -> list[int]:
    """Indices that put the file's perspectives in training order (``wanted``)."""
    if wanted is None:
        return list(range(len(found)))
    if sorted(found) != sorted(wanted):
        raise DataError(
            f"perspectives {', '.join(found)} differ from the model's: {', '.join(wanted)}",
            path,
            line,
        )
    return [found.index(name) for name in wanted]


def _decode(raw: bytes, path: Path, number: int) -> str:
    try:
        return raw.rstrip(b"\r").decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"not UTF-8 (byte {err.start} of the line)", path, number) from None


# -- metrics ---------------------------------------------------------------------------------


def roc_auc(scores: np.ndarray, gold: np.ndarray) -> float:
    """Area under the ROC curve (the Mann-Whitney U statistic, ties counted half); NaN when
    ``gold`` holds one class only (undefined, as scikit-learn says)."""
    gold = np.asarray(gold, dtype=bool)
    positives, negatives = int(gold.sum()), int((~gold).sum())
    if positives == 0 or negatives == 0:
        return math.nan
    from pretrainkit.tasks.metrics import ranks

    rank = ranks(np.asarray(scores, dtype=np.float64)) + 1  # 1-based, ties share their mean
    return float((rank[gold].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def perspective_metrics(
    probabilities: np.ndarray, gold: np.ndarray, names: Sequence[str], threshold: float
) -> dict[str, float]:
    """Per-perspective ``accuracy_<p>``, ``f1_<p>`` and ``auc_<p>`` of ``[n, P]`` probabilities
    against 0/1 gold, and their summaries: ``weighted_f1`` (F1 averaged with the number of
    gold positives as weights: scikit-learn's ``average="weighted"``), ``macro_f1``,
    ``accuracy`` (over every cell) and ``macro_auc``.

    An F1 with nothing to find and nothing found is 0 (scikit-learn's ``zero_division=0``); an
    AUC whose gold has one class is undefined, so ``auc_<p>`` is left out and ``macro_auc``
    averages the others (NaN if none is defined).
    """
    p = np.asarray(probabilities, dtype=np.float64).reshape(len(gold), len(names))
    g = np.asarray(gold, dtype=bool).reshape(p.shape)
    predicted = p >= threshold
    tp, fp, fn = (predicted & g).sum(0), (predicted & ~g).sum(0), (~predicted & g).sum(0)
    denominator = 2 * tp + fp + fn
    f1 = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)
    support = g.sum(0)
    result = {
        "weighted_f1": float((f1 * support).sum() / support.sum()) if support.sum() else 0.0,
        "macro_f1": float(f1.mean()) if len(names) else 0.0,
        "accuracy": float((predicted == g).mean()) if g.size else 0.0,
    }
    aucs = []
    for i, name in enumerate(names):
        result[f"accuracy_{name}"] = float((predicted[:, i] == g[:, i]).mean()) if len(g) else 0.0
        result[f"f1_{name}"] = float(f1[i])
        auc = roc_auc(p[:, i], g[:, i])
        if not math.isnan(auc):
            result[f"auc_{name}"] = auc
            aucs.append(auc)
    result["macro_auc"] = float(np.mean(aucs)) if aucs else math.nan
    return result


# -- the training stream ---------------------------------------------------------------------

# A string: numpy is not imported yet while the command line is parsed (cli/deferred.py).
Encode = Callable[[list[int], list[int]], dict[str, "np.ndarray"]]


class PairStream(RowStream):
    """Endless stream of labelled pairs, reshuffled every epoch: ``encode(ids_a, ids_b)`` makes
    the model inputs of a pair (the task's layout), ``labels`` is its float 0/1 ``[P]``."""

    def __init__(
        self, data: PairData, tokenizer: Tokenizer, encode: Encode, seed: int, rank: int, world: int
    ):
        if data.values is None:
            raise DataError("has no labels; training needs them", data.path)
        if len(data) < world:
            raise DataError(f"{len(data)} rows cannot be shared by {world} processes", data.path)
        self.encode, self.seed = encode, seed
        self.gold = data.gold().astype(np.float32)
        self.ids_a = tokenizer.encode_batch(data.texts_a)
        self.ids_b = tokenizer.encode_batch(data.texts_b)
        self.order = EpochOrder(len(data), seed, rank, world)

    def __next__(self) -> dict[str, np.ndarray]:
        _, _, row = self.order.current()
        self.order.advance()
        return self.encode(self.ids_a[row], self.ids_b[row]) | {"labels": self.gold[row]}


# -- what both tasks share -------------------------------------------------------------------


class PerspectiveTask(Task):
    """Reading, gold, metrics and predictions of a pair task with one sigmoid per perspective;
    a subclass adds the stream, batches and head. Its labels are the perspectives."""

    options_class = PerspectiveOptions
    metric_names = ("weighted_f1", "macro_f1", "accuracy", "macro_auc")

    def read(
        self, path: str | Path, require_labels: bool = True, columns: Sequence[str] | None = None
    ) -> PairData:
        return read_pairs(path, self.labels, require_labels, columns)

    def fit_labels(self, train: PairData) -> None:
        if train.values is None:
            raise DataError("the file has no labels", train.path)
        self.labels = list(train.perspectives)

    def perspectives(self) -> list[str]:
        if not self.labels:
            raise ConfigError(f"{self.name}: the perspectives are not known yet (fit_labels)")
        return self.labels

    def row_outputs(self, logits: torch.Tensor, batch: dict) -> list[np.ndarray]:
        return list(logits.double().cpu().numpy().reshape(-1, len(self.perspectives())))

    def gold(self, data: PairData) -> list[np.ndarray]:
        return list(data.gold())

    def metrics(self, outputs: list[np.ndarray], gold: list[np.ndarray]) -> dict[str, float]:
        names = self.perspectives()
        probabilities = _sigmoid(outputs, len(names))
        gold_array = np.stack(gold) if gold else np.zeros((0, len(names)))
        return perspective_metrics(probabilities, gold_array, names, self.options.threshold)

    def prediction_lines(self, outputs: list[np.ndarray], data: PairData) -> list[str]:
        names = self.perspectives()
        lines = ["id\t" + "\t".join(names)]
        for row_id, row in zip(data.ids, _sigmoid(outputs, len(names))):
            clean = " ".join(row_id.split("\t")).replace("\r", " ").replace("\n", " ")
            lines.append(clean + "\t" + "\t".join(f"{p:.6f}" for p in row))
        return lines

    def divergence(self, reference: list[np.ndarray], outputs: list[np.ndarray]) -> float:
        return bernoulli_kl(reference, outputs)  # each output is its own sigmoid

    def train_defaults(self, hidden_size: int, steps: int) -> dict[str, Any]:
        return width_defaults(hidden_size, steps)


def _sigmoid(outputs: list[np.ndarray], width: int) -> np.ndarray:
    if not outputs:
        return np.zeros((0, width))
    return torch.from_numpy(np.stack(outputs).astype(np.float64)).sigmoid().numpy()
