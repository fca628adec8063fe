"""``qa``: extractive question answering on SQuAD-format JSON (SQuAD 1.1 / 2.0, CMRC2018).

A question is read with its context and gold answers. The Tokenizer gives no character offsets,
so the context is tokenized piece by piece (a piece is what BERT's pre-tokenizer splits: a word,
a punctuation mark or a CJK character) and every token knows the characters it came from.
Long contexts become overlapping windows (``doc_stride``), question first; a training window
that does not hold the answer points at position 0 (``[CLS]``): "no answer in this window".
Decoding takes the ``n_best`` starts and ends of every window, keeps the best span over the
windows and cuts it from the context's characters. Metrics: SQuAD's EM and F1 for answers in
Latin script, CMRC2018's (CJK characters as tokens) where an answer holds CJK characters.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretrainkit.config import TargetConfig
from pretrainkit.data.batching import collate
from pretrainkit.data.instances import EpochOrder, RowStream
from pretrainkit.errors import ConfigError, DataError
from pretrainkit.tasks.base import TASKS, Task, TaskOptions
from pretrainkit.tasks.classification import width_defaults
from pretrainkit.tasks.qa_format import SQUAD_LAYOUT, QAData, read_squad
from pretrainkit.tasks.qa_metrics import QAGold, WindowOutput, decode_answers, qa_metrics
from pretrainkit.tasks.qa_windows import context_offset, prepare
from pretrainkit.tokenization import Tokenizer

log = logging.getLogger(__name__)

UNANSWERABLE = ("auto", "yes", "no")


@dataclass
class QAOptions(TaskOptions):
    seq_length: int = 384
    """Tokens per window, special tokens included: the question, then a slice of the context."""
    doc_stride: int = 128
    """Context tokens from the start of one window to the next (long contexts)."""
    max_query_length: int = 64
    """Question tokens kept; never more than half of a window, so the context has room."""
    n_best: int = 20
    """Start and end candidates per window when decoding an answer."""
    max_answer_length: int = 30
    """Longest answer the decoder gives, in tokens."""
    unanswerable: str = "auto"
    """Whether a question may have no answer (SQuAD 2.0): yes, no, or auto (yes when the
    training file has a question with is_impossible or no answers)."""
    null_threshold: float = 0.0
    """With unanswerable questions: answer nothing when the no-answer score beats the best
    span's score by more than this."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("doc_stride", "max_query_length", "n_best", "max_answer_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if self.unanswerable not in UNANSWERABLE:
            raise ConfigError(
                f"unanswerable must be one of {', '.join(UNANSWERABLE)}, got {self.unanswerable!r}"
            )
        if not isinstance(self.null_threshold, (int, float)) or not math.isfinite(
            self.null_threshold
        ):
            raise ConfigError(
                f"null_threshold must be a finite number, got {self.null_threshold!r}"
            )


# -- training windows -----------------------------------------------------------------------------


class QAStream(RowStream):
    """Endless stream of training windows (every window of every question with a target),
    reshuffled every epoch; ``start_positions``/``end_positions`` are the answer's tokens in the
    window, or 0 (the no-answer position) when the window does not hold it."""

    def __init__(
        self,
        data: QAData,
        tokenizer: Tokenizer,
        options: QAOptions,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        if data.answers is None or data.spans is None:
            raise DataError("has no answers; training needs them", data.path)
        self.tokenizer, self.seed = tokenizer, seed
        self.seq_length, self.doc_stride = options.seq_length, options.doc_stride
        self.prepared = prepare(data, tokenizer, options)
        rows: list[tuple[int, int, int, int, int]] = []
        absent = cut = 0
        for row, windows in enumerate(self.prepared.windows):
            offset = context_offset(tokenizer, len(self.prepared.questions[row]))
            span = data.spans[row]
            tokens = None if span is None else self.prepared.contexts[row].token_span(*span)
            if not data.unanswerable(row) and tokens is None:
                absent += span is None
                cut += span is not None
                continue
            for start, size in windows:
                if tokens is not None and start <= tokens[0] and tokens[1] < start + size:
                    rows.append(
                        (row, start, size, offset + tokens[0] - start, offset + tokens[1] - start)
                    )
                else:
                    rows.append((row, start, size, 0, 0))
        if absent or cut:
            log.warning(
                "%s: %d question(s) left out of training: %d without an answer found in the "
                "context, %d whose answer the tokenizer drops", data.path, absent + cut, absent, cut
            )  # fmt: skip
        if len(rows) < world_size:
            raise DataError(
                f"{len(rows)} training windows (no question has an answer in its context?) "
                f"cannot be shared by {world_size} process(es)",
                data.path,
            )
        self.rows = np.asarray(rows, dtype=np.int64)  # [windows, 5]
        self.order = EpochOrder(len(rows), seed, rank, world_size)

    def __next__(self) -> dict[str, np.ndarray]:
        _, _, index = self.order.current()
        self.order.advance()
        row, start, size, first, last = (int(x) for x in self.rows[index])
        input_ids, token_types, _ = self.prepared.inputs(self.tokenizer, row, start, size)
        return {
            "input_ids": np.asarray(input_ids, dtype=np.int64),
            "token_type_ids": np.asarray(token_types, dtype=np.int64),
            "start_positions": np.asarray(first, dtype=np.int64),
            "end_positions": np.asarray(last, dtype=np.int64),
        }

    def _identity(self) -> dict:
        return {**super()._identity(), "doc_stride": self.doc_stride}


# -- the task -----------------------------------------------------------------------------------


@TASKS.register("qa")
class QuestionAnswering(Task):
    """Extractive QA on SQuAD-format JSON: a span head (start and end logits per token);
    F1 and exact match; the prediction file holds ``id<TAB>answer`` (tabs and line breaks of
    an answer written as spaces; an empty answer is "no answer")."""

    name = "qa"
    options_class = QAOptions
    metric_names = ("f1", "exact_match")

    def read(
        self, path: str | Path, require_labels: bool = True, columns: Sequence[str] | None = None
    ) -> QAData:
        if columns is not None:
            raise ConfigError(f"qa reads {SQUAD_LAYOUT}; it has no columns to name")
        return read_squad(path, require_answers=require_labels)

    def fit_labels(self, train: QAData) -> None:
        # "auto" is settled by the training file and recorded, so that evaluate and predict
        # decode as training taught.
        if self.options.unanswerable == "auto":
            found = any(train.unanswerable(row) for row in range(len(train)))
            self.options = dataclasses.replace(self.options, unanswerable="yes" if found else "no")
            log.info(
                "qa: unanswerable questions %s in the training file",
                "found" if found else "not found",
            )

    def stream(
        self, data: QAData, tokenizer: Tokenizer, seed: int, rank: int, world_size: int
    ) -> QAStream:
        return QAStream(data, tokenizer, self.options, seed, rank, world_size)

    def batches(self, data: QAData, tokenizer: Tokenizer, batch_size: int) -> Iterator[dict]:
        """Every window of every question in file order; ``_question`` names the question,
        ``_char_start``/``_char_end`` the context characters of each position (-1 elsewhere)."""
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        prepared = prepare(data, tokenizer, self.options)
        rows = [
            (q, start, size)
            for q, windows in enumerate(prepared.windows)
            for start, size in windows
        ]
        for first in range(0, len(rows), batch_size):
            instances = []
            for q, start, size in rows[first : first + batch_size]:
                input_ids, token_types, offset = prepared.inputs(tokenizer, q, start, size)
                chars = np.full((2, len(input_ids)), -1, dtype=np.int64)
                alignment = prepared.contexts[q]
                chars[0, offset : offset + size] = alignment.starts[start : start + size]
                chars[1, offset : offset + size] = alignment.ends[start : start + size]
                instances.append({
                    "input_ids": np.asarray(input_ids, dtype=np.int64),
                    "token_type_ids": np.asarray(token_types, dtype=np.int64),
                    "_question": np.asarray(q, dtype=np.int64),
                    "_char_start": chars[0],
                    "_char_end": chars[1],
                })  # fmt: skip
            batch = collate(instances, tokenizer.pad_id)
            padding = batch["attention_mask"] == 0  # collate pads with 0, a real character
            for key in ("_char_start", "_char_end"):
                batch[key] = batch[key].masked_fill(padding, -1)
            yield batch

    def target(self) -> TargetConfig:
        return TargetConfig("span_extraction", {})

    def row_outputs(self, logits: torch.Tensor, batch: dict) -> list[WindowOutput]:
        scores = logits.double().cpu().numpy()  # [b, s, 2]
        char_start = batch["_char_start"].cpu().numpy()
        char_end = batch["_char_end"].cpu().numpy()
        outputs = []
        for row, question in enumerate(batch["_question"].tolist()):
            context = np.flatnonzero(char_start[row] >= 0)
            positions = np.concatenate([[0], context])
            outputs.append(
                WindowOutput(
                    question,
                    scores[row, positions, 0],
                    scores[row, positions, 1],
                    char_start[row, context],
                    char_end[row, context],
                )
            )
        return outputs

    def gold(self, data: QAData) -> list[QAGold]:
        if data.answers is None:
            raise DataError("has no answers to score against", data.path)
        return [QAGold(c, a) for c, a in zip(data.contexts, data.answers)]

    def metrics(self, outputs: list[WindowOutput], gold: list[QAGold]) -> dict[str, float]:
        answers = decode_answers(outputs, [g.context for g in gold], self.options)
        return qa_metrics(answers, [g.answers for g in gold])

    def prediction_lines(self, outputs: list[WindowOutput], data: QAData) -> list[str]:
        answers = decode_answers(outputs, data.contexts, self.options)
        lines = ["id\tanswer"]
        for qid, answer in zip(data.ids, answers):
            lines.append(f"{qid}\t{' '.join(answer.splitlines()).replace(chr(9), ' ')}")
        return lines

    def divergence(self, reference: list[WindowOutput], outputs: list[WindowOutput]) -> float:
        """Mean KL of the start and end distributions over the windows."""
        total = 0.0
        for ref, out in zip(reference, outputs, strict=True):
            for p_logits, q_logits in (
                (ref.start_logits, out.start_logits),
                (ref.end_logits, out.end_logits),
            ):
                p, q = _log_softmax(p_logits), _log_softmax(q_logits)
                total += float((np.exp(p) * (p - q)).sum()) / 2
        return total / max(len(reference), 1)

    def train_defaults(self, hidden_size: int, steps: int) -> dict[str, Any]:
        return width_defaults(hidden_size, steps)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max()
    return shifted - np.log(np.exp(shifted).sum())
