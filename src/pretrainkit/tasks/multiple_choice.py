"""``multiple_choice``: pick the answer among a question's choices (C3; ChID as C3-style rows).

Every (context, question, choice) is one sequence ``[CLS] choice question [SEP] context [SEP]``
scored by one linear unit (``targets.multiple_choice``); a softmax over the question's choices
gives the answer. When a sequence is longer than ``seq_length`` the context is cut from its
end; the choice and question are cut only when they alone do not fit (counted in the log).

A row of the data is a question, and so is an instance of the training stream: its real
choices as ``[k, s]`` arrays and its answer. ``MultipleChoice.collate`` flattens a batch of
``b`` questions into the ``[b·c, s]`` inputs the model takes (``c``: the most choices in the
batch; a question with fewer is filled up with copies of its first choice, labelled as
padding) and ``[b, c]`` labels, so ``--batch-size``, ``--epochs`` and ``--folds`` all count
questions. Evaluation batches hold whole questions too, only their real choices, and
``_choices`` tells ``row_outputs`` how many each question has; their ``batch_size`` counts
sequences (at least one question per batch), which bounds their memory.
"""

from __future__ import annotations

import logging
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
from pretrainkit.tasks.base import TASKS, Task
from pretrainkit.tasks.c3_format import MultipleChoiceData, read_c3
from pretrainkit.tasks.classification import ClassificationOptions, width_defaults
from pretrainkit.tasks.metrics import accuracy
from pretrainkit.tokenization import Tokenizer

log = logging.getLogger(__name__)


@dataclass
class MultipleChoiceOptions(ClassificationOptions):
    num_choices: int = 4
    """Most choices a question may have (multiple_choice). A training batch of --batch-size
    questions holds up to batch x num_choices sequences: questions with fewer choices are
    filled up to the most choices among them."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.num_choices, int) or self.num_choices < 2:
            raise ConfigError(f"num_choices must be an integer >= 2, got {self.num_choices!r}")


class _Encoded:
    """Token ids of some questions, contexts tokenized once per distinct text."""

    def __init__(self, data: MultipleChoiceData, rows: range, tokenizer: Tokenizer):
        contexts = sorted({data.contexts[r] for r in rows})
        context_ids = dict(zip(contexts, tokenizer.encode_batch(contexts)))
        self.contexts = [context_ids[data.contexts[r]] for r in rows]
        self.questions = tokenizer.encode_batch([data.questions[r] for r in rows])
        flat = tokenizer.encode_batch([c for r in rows for c in data.choices[r]])
        self.choices: list[list[list[int]]] = []
        start = 0
        for r in rows:
            self.choices.append(flat[start : start + len(data.choices[r])])
            start += len(data.choices[r])

    def sequence(
        self, tokenizer: Tokenizer, row: int, choice: int, seq_length: int
    ) -> dict[str, np.ndarray]:
        """``[CLS] choice question [SEP] context [SEP]``, the context cut first."""
        first = self.choices[row][choice] + self.questions[row]
        room = max(0, seq_length - tokenizer.template.num_special(True))
        first = first[:room]
        context = self.contexts[row][: room - len(first)]
        # max_length only checks that the special tokens fit: both parts fit already.
        input_ids, token_types = tokenizer.build_inputs(first, context, seq_length)
        return {
            "input_ids": np.asarray(input_ids, dtype=np.int64),
            "token_type_ids": np.asarray(token_types, dtype=np.int64),
        }

    def question(self, tokenizer: Tokenizer, row: int, seq_length: int) -> list[dict]:
        """The sequences of every choice of the question ``row``."""
        choices = range(len(self.choices[row]))
        return [self.sequence(tokenizer, row, choice, seq_length) for choice in choices]


class MultipleChoiceStream(RowStream):
    """Endless stream of questions, reshuffled every epoch. An instance is one question: its
    real choices as ``input_ids``, ``token_type_ids`` and ``attention_mask`` ``[k, s]`` (each
    choice padded to the question's longest) and ``labels``, the 0-d index of its answer."""

    def __init__(
        self,
        data: MultipleChoiceData,
        tokenizer: Tokenizer,
        seq_length: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        if data.answers is None:
            raise DataError("has questions without an answer; training needs them all", data.path)
        if len(data) < world_size:
            raise DataError(f"{len(data)} questions cannot be shared by {world_size}", data.path)
        self.tokenizer, self.seq_length = tokenizer, seq_length
        self.seed, self.answers = seed, data.answers
        self.encoded = _Encoded(data, range(len(data)), tokenizer)
        _log_cut(self.encoded, data, tokenizer, seq_length)
        self.order = EpochOrder(len(data), seed, rank, world_size)

    def __next__(self) -> dict[str, np.ndarray]:
        _, _, row = self.order.current()
        self.order.advance()
        sequences = self.encoded.question(self.tokenizer, row, self.seq_length)
        question = collate(sequences, self.tokenizer.pad_id)  # [k, s], attention_mask added
        label = np.asarray(self.answers[row], dtype=np.int64)
        return {key: value.numpy() for key, value in question.items()} | {"labels": label}


def collate_questions(
    instances: list[dict[str, np.ndarray]], pad_id: int
) -> dict[str, torch.Tensor]:
    """The stream's questions → a training batch: ``input_ids``, ``token_type_ids`` and
    ``attention_mask`` ``[b·c, s]``, a question's choices in consecutive rows, and ``labels``
    ``[b, c]`` (the target's layout), ``c`` the most choices among the ``b`` questions.

    A question with fewer choices is filled up with copies of its first one, labelled
    ``PADDING_CHOICE``: any valid sequence will do (the target scores it -inf), and a real one
    is safe for every template (no empty rows). The other labels are the answer's index.
    """
    # Imported here: the targets import torch.nn, which the CLI's parser must not load.
    from pretrainkit.targets.multiple_choice import PADDING_CHOICE

    if not instances:
        raise ValueError("cannot collate an empty list of questions")
    size = len(instances)
    width = max(len(q["input_ids"]) for q in instances)
    longest = max(q["input_ids"].shape[1] for q in instances)
    fills = {"input_ids": pad_id, "token_type_ids": 0, "attention_mask": 0}
    batch = {
        key: np.full((size, width, longest), fill, dtype=np.int64) for key, fill in fills.items()
    }
    labels = np.full((size, width), PADDING_CHOICE, dtype=np.int64)  # [b, c]
    for i, question in enumerate(instances):
        choices, length = question["input_ids"].shape
        rows = [*range(choices), *[0] * (width - choices)]  # the fillers repeat choice 0
        for key, array in batch.items():
            array[i, :, :length] = question[key][rows]
        labels[i, :choices] = question["labels"]
    flat = {key: torch.from_numpy(a.reshape(size * width, longest)) for key, a in batch.items()}
    return flat | {"labels": torch.from_numpy(labels)}


def multiple_choice_batches(
    data: MultipleChoiceData, tokenizer: Tokenizer, seq_length: int, batch_size: int
) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of whole questions in file order, at most ``batch_size`` sequences each (at
    least one question); only the real choices, ``_choices`` ``[q]`` counts them. No labels."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    start = 0
    while start < len(data):
        stop, size = start + 1, len(data.choices[start])
        while stop < len(data) and size + len(data.choices[stop]) <= batch_size:
            size, stop = size + len(data.choices[stop]), stop + 1
        encoded = _Encoded(data, range(start, stop), tokenizer)
        instances = [
            sequence
            for row in range(stop - start)
            for sequence in encoded.question(tokenizer, row, seq_length)
        ]
        batch = collate(instances, tokenizer.pad_id)
        counts = [len(choices) for choices in data.choices[start:stop]]
        batch["_choices"] = torch.tensor(counts, dtype=torch.int64)
        yield batch
        start = stop


def _log_cut(encoded: _Encoded, data: MultipleChoiceData, tokenizer: Tokenizer, length: int):
    """Say how many training sequences lose part of their context, and how many lose part of
    their choice + question (a seq_length too short for the task)."""
    room = length - tokenizer.template.num_special(True)
    total = context_cut = first_cut = 0
    for choices, question, context in zip(encoded.choices, encoded.questions, encoded.contexts):
        for choice in choices:
            total += 1
            first = len(choice) + len(question)
            first_cut += first > room
            context_cut += first <= room and first + len(context) > room
    log.info(
        "%s: %d of %d sequences have their context cut to seq_length %d",
        data.path,
        context_cut,
        total,
        length,
    )
    if first_cut:
        log.warning(
            "%s: %d of %d choice + question texts are longer than seq_length %d: cut, and no "
            "context left",
            data.path,
            first_cut,
            total,
            length,
        )


@TASKS.register("multiple_choice")
class MultipleChoice(Task):
    """C3-style JSON files; one score per choice, softmax over the question's choices;
    accuracy; the prediction file holds ``id<TAB>answer`` (the chosen choice's text)."""

    name = "multiple_choice"
    options_class = MultipleChoiceOptions
    metric_names = ("accuracy",)

    def read(
        self, path: str | Path, require_labels: bool = True, columns: Sequence[str] | None = None
    ) -> MultipleChoiceData:
        if columns is not None:
            raise ConfigError("multiple_choice files are JSON documents: they have no columns")
        return read_c3(path, self.options.num_choices, require_labels)

    def stream(
        self, data: MultipleChoiceData, tokenizer: Tokenizer, seed: int, rank: int, world_size: int
    ) -> MultipleChoiceStream:
        return MultipleChoiceStream(
            data, tokenizer, self.options.seq_length, seed, rank, world_size
        )

    def collate(self, instances: list[dict[str, np.ndarray]], pad_id: int) -> dict[str, Any]:
        """A batch of questions flattened for the model (``collate_questions``)."""
        return collate_questions(instances, pad_id)

    def batches(
        self, data: MultipleChoiceData, tokenizer: Tokenizer, batch_size: int
    ) -> Iterator[dict]:
        return multiple_choice_batches(data, tokenizer, self.options.seq_length, batch_size)

    def target(self) -> TargetConfig:
        options = self.options
        return TargetConfig(
            "multiple_choice",
            {
                "num_choices": options.num_choices,
                "pooling": options.pooling,
                "dropout": options.dropout,
            },
        )

    def row_outputs(self, logits: torch.Tensor, batch: dict) -> list[np.ndarray]:
        """One ``[num_choices]`` row of scores per question, -inf after its real choices."""
        scores = logits.double().cpu().numpy().reshape(-1)
        rows, start = [], 0
        for count in batch["_choices"].tolist():
            row = np.full(self.options.num_choices, -np.inf)
            row[:count] = scores[start : start + count]
            rows.append(row)
            start += count
        return rows

    def gold(self, data: MultipleChoiceData) -> list[int]:
        if data.answers is None:
            raise DataError("has questions without an answer to score against", data.path)
        return list(data.answers)

    def metrics(self, outputs: list[np.ndarray], gold: list[int]) -> dict[str, float]:
        predicted = np.array([int(row.argmax()) for row in outputs], dtype=np.int64)
        return {"accuracy": accuracy(predicted, np.array(gold, dtype=np.int64))}

    def prediction_lines(self, outputs: list[np.ndarray], data: MultipleChoiceData) -> list[str]:
        lines = ["id\tanswer"]
        for row, question_id, choices in zip(outputs, data.ids, data.choices):
            lines.append(f"{_field(question_id)}\t{_field(choices[int(row.argmax())])}")
        return lines

    def divergence(self, reference: list[np.ndarray], outputs: list[np.ndarray]) -> float:
        """Mean KL of the softmax over each question's real choices (the -inf padding left
        out: it would make the default's difference of log-probabilities NaN)."""
        total = 0.0
        for ref, out in zip(reference, outputs):
            real = np.isfinite(ref)
            p = torch.from_numpy(ref[real]).log_softmax(-1)
            q = torch.from_numpy(out[real]).log_softmax(-1)
            total += float((p.exp() * (p - q)).sum())
        return total / max(1, len(reference))

    def train_defaults(self, hidden_size: int, steps: int) -> dict[str, Any]:
        return width_defaults(hidden_size, steps)


def _field(text: str) -> str:
    # One line per question, two tab-separated fields: a tab or newline inside a choice would
    # break the file for whoever reads it.
    return " ".join(text.split("\t")).replace("\r", " ").replace("\n", " ")
