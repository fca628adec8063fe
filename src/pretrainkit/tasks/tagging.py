"""``tagging``: one BIO tag per word (named entities: MSRA NER, CoNLL-style data).

The file is a TSV with the header ``text_a<TAB>label`` (either order; a file without a header
names them with ``columns``): ``text_a`` holds the words separated by spaces, ``label`` one tag
per word, also space-separated: ``O``, ``B-TYPE`` (an entity begins) or ``I-TYPE`` (it goes on).

- Label set: the ``label_file`` option when given, else a ``label2id.json`` beside the training
  file, else the training tags (``O`` first, then ``B-``/``I-`` of every type seen, sorted by
  type, both prefixes of a type even where the training file has only one). A label file is a
  JSON object ``{tag: id}`` with ids 0..n-1 (TencentPretrain's ``label2id.json``) or a JSON list
  of tags; its order is the head's class order. It must hold ``O``.
- BIO repair: an ``I-X`` that does not continue an ``X`` entity (first tag, or after ``O`` or
  another type) begins one, as conlleval and seqeval's default mode read it. The reader rewrites
  it to ``B-X``, counts the rewrites and logs the count with the first line (a warning), so
  training (the CRF forbids such a transition), metrics and written predictions agree; IOB1
  files become BIO this way. A tag that is not ``O`` / ``B-X`` / ``I-X`` is an error.
- Alignment: each word is tokenized on its own (after its space, so byte-level BPE sees the
  same piece as in running text); the word's first piece carries its tag, the other pieces and
  the special tokens -100. A word that the tokenizer turns into nothing gets ``[UNK]``.
- Truncation: words whose first piece falls beyond ``seq_length`` are not trained on and are
  predicted ``O`` (so they count as misses when they are entities); the log says how many.
- Head: softmax over the tags at each token (``token_classification``), or with ``crf`` a BIO-
  constrained CRF (``targets/crf.py``) over all the tokens, [CLS], [SEP] and later pieces being
  unobserved states (the head sees no word boundaries at prediction time). Predictions take the
  best tag per word (for the CRF: of the Viterbi path) and are read as conlleval reads them (an
  ``I-X`` that begins an entity is written ``B-X``: with the softmax head any tag may follow any
  other; with the CRF, only where an unobserved later piece started the entity), so the
  prediction file is always valid BIO.
- Metrics: entity-level precision, recall and F1 (exact span and type, micro over entities),
  ``f1`` first, plus ``f1_TYPE`` per entity type of the label set.
- Prediction file: ``text_a<TAB>label`` rows with the predicted tags, readable by this reader.
"""

from __future__ import annotations

import json
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
from pretrainkit.tasks.base import TASKS, PackOptions, Task
from pretrainkit.tasks.classification import width_defaults
from pretrainkit.tokenization import Tokenizer

log = logging.getLogger(__name__)

COLUMNS = ("text_a", "label")
LABEL_FILE = "label2id.json"
IGNORE = -100
OUTSIDE = "O"
_EXPECTED = "a header text_a<TAB>label (space-separated words, one BIO tag per word)"


@dataclass
class TaggingOptions(PackOptions):
    crf: bool = False
    """A CRF layer over the tags (BIO-constrained transitions, Viterbi decoding) instead of an
    independent softmax per token."""
    dropout: float = 0.1
    """Dropout before the tag projection."""
    label_file: str | None = None
    """The label set and its order: a JSON {tag: id} (label2id.json) or a JSON list of tags.
    Default: a label2id.json beside the training file, else the tags of the training file."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")


@dataclass
class TaggingData:
    """The rows of a tagging file.

    Attributes:
        path: the file read.
        words: the words of each row.
        tags: the tags of each row (one per word, BIO-repaired), or None without a label column.
        first_line: the line of the file that holds row 0 (2 after a header, 1 without).
        repaired: how many ``I-X`` tags that began an entity were rewritten to ``B-X``.
    """

    path: Path
    words: list[list[str]]
    tags: list[list[str]] | None
    first_line: int = 2
    repaired: int = 0

    def __len__(self) -> int:
        return len(self.words)


# -- BIO tags and entity spans -----------------------------------------------------------------
def is_bio_tag(tag: str) -> bool:
    return tag == OUTSIDE or (tag[:2] in ("B-", "I-") and len(tag) > 2)


def repair_bio(tags: list[str]) -> tuple[list[str], int]:
    """``tags`` with every ``I-X`` that begins an entity written ``B-X``, and how many were."""
    fixed, count, kind = [], 0, None
    for tag in tags:
        if tag.startswith("I-") and tag[2:] != kind:
            tag, count = "B-" + tag[2:], count + 1
        fixed.append(tag)
        kind = tag[2:] if tag != OUTSIDE else None
    return fixed, count


def entity_spans(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """The entities of a tag sequence as ``(type, start, end)`` (end exclusive), read as
    conlleval reads BIO: ``B-X``, or an ``I-X`` that does not continue an X, begins one."""
    spans = set()
    kind: str | None = None
    begin = 0
    for i, tag in enumerate([*tags, OUTSIDE]):
        if tag.startswith("I-") and tag[2:] == kind:
            continue
        if kind is not None:
            spans.add((kind, begin, i))
        kind, begin = (tag[2:], i) if tag[:2] in ("B-", "I-") else (None, i)
    return spans


def entity_metrics(
    predicted: Sequence[Sequence[str]], gold: Sequence[Sequence[str]], types: Sequence[str] = ()
) -> dict[str, float]:
    """Micro precision, recall and F1 over exact (type, span) matches, and ``f1_TYPE`` for
    every type in ``types`` or in either side. A score with nothing to count is 0."""
    found: dict[str, list[int]] = {kind: [0, 0, 0] for kind in types}  # true, predicted, gold
    for pred_row, gold_row in zip(predicted, gold, strict=True):
        p, g = entity_spans(pred_row), entity_spans(gold_row)
        for index, spans in ((1, p), (2, g), (0, p & g)):
            for kind, _, _ in spans:
                found.setdefault(kind, [0, 0, 0])[index] += 1
    true, pred, real = (sum(c[i] for c in found.values()) for i in range(3))
    metrics = {
        "f1": _f1(true, pred, real),
        "precision": true / pred if pred else 0.0,
        "recall": true / real if real else 0.0,
    }
    return metrics | {f"f1_{kind}": _f1(*found[kind]) for kind in sorted(found)}


def _f1(true: int, predicted: int, gold: int) -> float:
    return 2 * true / (predicted + gold) if predicted + gold else 0.0


# -- files --------------------------------------------------------------------------------------
def read_tagging_tsv(
    path: str | Path,
    label_set: Sequence[str] | None = None,
    require_labels: bool = True,
    columns: Sequence[str] | str | None = None,
) -> TaggingData:
    """Read a tagging TSV (see the module doc); every row is kept, so row i is line
    ``first_line + i``.

    Args:
        path: the file (UTF-8).
        label_set: when given, every tag must be one of these.
        require_labels: the file must have a label column (files to predict on need not).
        columns: the field names of a file without a header (``text_a,label``).

    Raises:
        DataError: naming the file and line: a bad header, a row with the wrong number of
            fields, an empty text, a tag count that differs from the word count (with a hint
            when the row looks like a classification row), a tag that is not BIO or not in
            ``label_set``, bytes that are not UTF-8, an empty file.
    """
    path = Path(path)
    raw = read_input(path).split(b"\n")
    if raw[-1] == b"":
        raw.pop()  # the newline that ends the last row
    if not raw:
        raise DataError(f"file is empty; expected {_EXPECTED}", path)
    lines = [_decode(line, path, number) for number, line in enumerate(raw, start=1)]
    lines[0] = lines[0].lstrip("\ufeff")  # a BOM would hide the first name
    if columns is None:
        header, first_line = lines[0].split("\t"), 2
        _check_names(header, path, require_labels, 1)
        lines = lines[1:]
    else:
        names = columns.split(",") if isinstance(columns, str) else list(columns)
        header, first_line = [name.strip() for name in names], 1
        _check_names(header, path, require_labels, None)
        if lines[0].split("\t") == header:
            raise DataError("line 1 is a header; columns are for files without one", path, 1)
    if not lines:
        raise DataError("the file has a header but no rows", path, 2)
    allowed = set(label_set) if label_set is not None else None
    words: list[list[str]] = []
    tags: list[list[str]] = []
    repaired, first_repair = 0, None
    for number, line in enumerate(lines, start=first_line):
        values = line.split("\t")
        if len(values) != len(header):
            raise DataError(
                f"expected {len(header)} tab-separated fields ({', '.join(header)}), "
                f"got {len(values)}",
                path,
                number,
            )
        fields = dict(zip(header, values))
        row = _split(fields["text_a"])
        if not row:
            raise DataError("text_a is empty", path, number)
        words.append(row)
        if "label" in fields:
            row_tags, count = _row_tags(fields["label"], len(row), allowed, path, number)
            tags.append(row_tags)
            repaired += count
            first_repair = first_repair or (number if count else None)
    if repaired:
        log.warning(
            "%s: %d I- tags began an entity (first on line %d); read as B- tags, as conlleval "
            "reads them",
            path,
            repaired,
            first_repair,
        )
    return TaggingData(path, words, tags if "label" in header else None, first_line, repaired)


def _row_tags(
    text: str, num_words: int, allowed: set[str] | None, path: Path, number: int
) -> tuple[list[str], int]:
    tags = _split(text)
    if len(tags) != num_words:
        hint = ""
        if len(tags) == 1 and num_words > 1:
            hint = (
                "; one label for a whole text is a classification file (--task "
                "classification); a tagging file has one tag per word"
            )
        raise DataError(f"{len(tags)} tags for {num_words} words{hint}", path, number)
    for tag in tags:
        if not is_bio_tag(tag):
            raise DataError(
                f"tag {tag!r} is not a BIO tag (O, B-TYPE or I-TYPE); BIOES tags (E-, S-) "
                f"need converting to BIO first",
                path,
                number,
            )
        if allowed is not None and tag not in allowed:
            raise DataError(
                f"tag {tag!r} is not one of the labels: {', '.join(sorted(allowed))}",
                path,
                number,
            )
    return repair_bio(tags)


def _split(text: str) -> list[str]:
    # Spaces only: a word may be another whitespace character (U+3000 in Chinese text).
    return [word for word in text.split(" ") if word]


def _check_names(names: list[str], path: Path, require_labels: bool, line: int | None) -> None:
    what = "header" if line is not None else "columns"
    for name in names:
        if name == "text_b":
            raise DataError(
                f"{what}: text_b is a sentence-pair column (--task classification); "
                f"expected {_EXPECTED}",
                path,
                line,
            )
        if name not in COLUMNS:
            raise DataError(
                f"{what}: unknown column {name!r}{closest(name, COLUMNS)}; expected {_EXPECTED}",
                path,
                line,
            )
    if len(set(names)) != len(names):
        raise DataError(f"{what}: a column is named twice in {names}", path, line)
    for needed in COLUMNS if require_labels else COLUMNS[:1]:
        if needed not in names:
            raise DataError(
                f"{what}: the {needed} column is missing; expected {_EXPECTED}", path, line
            )


def _decode(raw: bytes, path: Path, number: int) -> str:
    try:
        return raw.rstrip(b"\r").decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"not UTF-8 (byte {err.start} of the line)", path, number) from None


def read_label_file(path: str | Path) -> list[str]:
    """The tags of a label file in class order: a JSON ``{tag: id}`` with ids 0..n-1, or a JSON
    list of tags. They must be BIO tags, distinct, with ``O`` among them."""
    try:
        value = json.loads(read_input(path, "label file"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"not a JSON label file: {err}", path) from None
    if isinstance(value, dict):
        ids = sorted(value.values()) if all(type(v) is int for v in value.values()) else None
        if ids != list(range(len(value))):
            raise DataError("label ids must be the integers 0..n-1, each once", path)
        value = sorted(value, key=value.__getitem__)
    if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
        raise DataError("expected a JSON object {tag: id} or a list of tags", path)
    bad = [tag for tag in value if not is_bio_tag(tag)]
    if bad or len(set(value)) != len(value) or OUTSIDE not in value:
        why = f"{bad[0]!r} is not a BIO tag" if bad else "a tag repeats or O is missing"
        raise DataError(f"labels must be distinct BIO tags including O: {why}", path)
    return list(value)


def labels_of_tags(rows: Sequence[Sequence[str]]) -> list[str]:
    """``O``, then ``B-X`` and ``I-X`` of every type seen, types sorted: a type seen only in
    single-word entities still gets ``I-X`` (another file may continue it)."""
    kinds = sorted({tag[2:] for row in rows for tag in row if tag != OUTSIDE})
    return [OUTSIDE, *(f"{prefix}-{kind}" for kind in kinds for prefix in "BI")]


# -- tokens -------------------------------------------------------------------------------------
def word_pieces(tokenizer: Tokenizer, rows: Sequence[Sequence[str]]) -> list[list[list[int]]]:
    """The pieces of every word of every row (one batched tokenizer call)."""
    flat = [word if i == 0 else " " + word for row in rows for i, word in enumerate(row)]
    encoded = tokenizer.encode_batch(flat) if flat else []
    out, at = [], 0
    for row in rows:
        out.append([ids or [tokenizer.unk_id] for ids in encoded[at : at + len(row)]])
        at += len(row)
    return out


def align(
    tokenizer: Tokenizer, pieces: list[list[int]], seq_length: int
) -> tuple[list[int], list[int], list[int]]:
    """``(input_ids, token_type_ids, starts)`` of one row: ``starts`` holds the position of the
    first piece of each word that fits in ``seq_length`` (the words after them are cut)."""
    budget = seq_length - tokenizer.template.num_special(False)
    offset = [item for item, _ in tokenizer.template.single].index("$A")
    flat: list[int] = []
    starts: list[int] = []
    for word in pieces:
        if len(flat) >= budget:
            break
        starts.append(offset + len(flat))
        flat += word
    input_ids, token_types = tokenizer.build_inputs(flat, max_length=seq_length)
    return input_ids, token_types, starts


class Truncation:
    """Counts the words that do not fit, for one log line per pass over a file."""

    def __init__(self) -> None:
        self.words = self.rows = self.total = 0

    def add(self, num_words: int, kept: int) -> None:
        self.total += 1
        if kept < num_words:
            self.rows, self.words = self.rows + 1, self.words + num_words - kept

    def report(self, path: Path, seq_length: int, what: str) -> None:
        if self.words:
            log.warning(
                "%s: %d words in %d of %d rows lie beyond seq_length %d; %s",
                path,
                self.words,
                self.rows,
                self.total,
                seq_length,
                what,
            )


def _instance(input_ids: list[int], token_types: list[int]) -> dict[str, np.ndarray]:
    return {
        "input_ids": np.asarray(input_ids, dtype=np.int64),
        "token_type_ids": np.asarray(token_types, dtype=np.int64),
    }


class TaggingStream(RowStream):
    """Endless stream of ``[CLS] words [SEP]`` instances with per-token ``labels`` (the tag id
    at each word's first piece, -100 elsewhere), reshuffled every epoch. Rows are tokenized
    once up front (tagging sets are small)."""

    def __init__(
        self,
        data: TaggingData,
        tokenizer: Tokenizer,
        label_set: list[str],
        seq_length: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        if data.tags is None:
            raise DataError("has no labels; training needs a label column", data.path)
        self.start(len(data), seed, rank, world_size, data.path)
        self.seq_length, self.seed = seq_length, seed
        index = {tag: i for i, tag in enumerate(label_set)}
        truncation = Truncation()
        self.instances = []
        for row, (tags, pieces) in enumerate(zip(data.tags, word_pieces(tokenizer, data.words))):
            input_ids, token_types, starts = align(tokenizer, pieces, seq_length)
            truncation.add(len(tags), len(starts))
            labels = np.full(len(input_ids), IGNORE, dtype=np.int64)
            for position, tag in zip(starts, tags):
                if tag not in index:
                    raise DataError(
                        f"tag {tag!r} is not one of the labels: {', '.join(label_set)}",
                        data.path,
                        data.first_line + row,
                    )
                labels[position] = index[tag]
            self.instances.append(_instance(input_ids, token_types) | {"labels": labels})
        truncation.report(data.path, seq_length, "they are not trained on")

    def __next__(self) -> dict[str, np.ndarray]:
        _, _, row = self.order.current()
        self.order.advance()
        return dict(self.instances[row])


def tagging_batches(
    data: TaggingData, tokenizer: Tokenizer, seq_length: int, batch_size: int
) -> Iterator[dict[str, Any]]:
    """Batches of the rows in file order, without labels; ``_starts`` holds the position of
    each kept word's first piece, per row."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    truncation = Truncation()
    for begin in range(0, len(data), batch_size):
        rows = data.words[begin : begin + batch_size]
        instances, starts = [], []
        for words, pieces in zip(rows, word_pieces(tokenizer, rows)):
            input_ids, token_types, row_starts = align(tokenizer, pieces, seq_length)
            truncation.add(len(words), len(row_starts))
            instances.append(_instance(input_ids, token_types))
            starts.append(row_starts)
        yield collate(instances, tokenizer.pad_id) | {"_starts": starts}
    truncation.report(data.path, seq_length, "they are predicted O")


# -- the task -----------------------------------------------------------------------------------
@TASKS.register("tagging")
class Tagging(Task):
    """Rows ``text_a<TAB>label`` of words and their BIO tags; a softmax or CRF head; entity-level
    F1 (see the module doc for the label set, BIO repair and truncation)."""

    name = "tagging"
    options_class = TaggingOptions
    metric_names = ("f1", "precision", "recall")

    def read(
        self, path: str | Path, require_labels: bool = True, columns: Sequence[str] | None = None
    ) -> TaggingData:
        return read_tagging_tsv(path, self.labels, require_labels, columns)

    def fit_labels(self, train: TaggingData) -> None:
        if train.tags is None:
            raise DataError("the file has no label column", train.path)
        chosen = self.options.label_file
        beside = train.path.parent / LABEL_FILE
        if chosen is None and beside.is_file():
            chosen = str(beside)
        labels = read_label_file(chosen) if chosen else labels_of_tags(train.tags)
        log.info("tagging labels (from %s): %s", chosen or "the training tags", ", ".join(labels))
        known = set(labels)
        for row, tags in enumerate(train.tags):
            unknown = [tag for tag in tags if tag not in known]
            if unknown:
                raise DataError(
                    f"tag {unknown[0]!r} is not in the label set of {chosen}",
                    train.path,
                    train.first_line + row,
                )
        self.labels = labels

    def _label_set(self) -> list[str]:
        if not self.labels:
            raise ConfigError("tagging: the label set is not known yet (fit_labels)")
        return self.labels

    def stream(
        self, data: TaggingData, tokenizer: Tokenizer, seed: int, rank: int, world_size: int
    ) -> TaggingStream:
        return TaggingStream(
            data, tokenizer, self._label_set(), self.options.seq_length, seed, rank, world_size
        )

    def batches(self, data: TaggingData, tokenizer: Tokenizer, batch_size: int) -> Iterator[dict]:
        return tagging_batches(data, tokenizer, self.options.seq_length, batch_size)

    def target(self) -> TargetConfig:
        name = "crf" if self.options.crf else "token_classification"
        return TargetConfig(name, {"labels": self._label_set(), "dropout": self.options.dropout})

    def row_outputs(self, logits: torch.Tensor, batch: dict) -> list[np.ndarray]:
        """Per row ``[kept words, tags]``: the scores at each word's first piece (softmax
        logits, or the CRF's max-marginals, whose argmax is the Viterbi path)."""
        scores = logits.double().cpu()
        return [scores[i, starts].numpy() for i, starts in enumerate(batch["_starts"])]

    def decode(self, output: np.ndarray, num_words: int) -> list[str]:
        """The tags of one row: the best tag per kept word, ``O`` for the cut ones, as valid
        BIO."""
        labels = self._label_set()
        tags = [labels[int(i)] for i in np.asarray(output).argmax(-1)] if len(output) else []
        return repair_bio(tags + [OUTSIDE] * (num_words - len(tags)))[0]

    def gold(self, data: TaggingData) -> list[list[str]]:
        if data.tags is None:
            raise DataError("has no labels to score against", data.path)
        return data.tags

    def metrics(self, outputs: list[np.ndarray], gold: list[list[str]]) -> dict[str, float]:
        predicted = [self.decode(out, len(tags)) for out, tags in zip(outputs, gold, strict=True)]
        types = sorted({tag[2:] for tag in self._label_set() if tag != OUTSIDE})
        return entity_metrics(predicted, gold, types)

    def prediction_lines(self, outputs: list[np.ndarray], data: TaggingData) -> list[str]:
        lines = ["text_a\tlabel"]
        for out, words in zip(outputs, data.words, strict=True):
            lines.append(f"{' '.join(words)}\t{' '.join(self.decode(out, len(words)))}")
        return lines

    def train_defaults(self, hidden_size: int, steps: int) -> dict[str, Any]:
        return width_defaults(hidden_size, steps)
