"""The downstream-task seam: one ``Task`` per file, found by name in ``TASKS``.

A task owns everything that differs between downstream problems — its file format, the head
it puts on the encoder, how rows become batches, how the head's outputs become predictions,
its metrics and how predictions are written — so that fine-tuning, evaluation, prediction and
SAMP are one branch-free code path each (``workflows/finetune.py``, ``samp/data.py``).

The model folder records its task in ``task.json`` (name, options, label set): every command
that reads a fine-tuned folder rebuilds the task from it (``task_of``) instead of probing the
model's targets.
"""

from __future__ import annotations

import dataclasses
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from pretrainkit.config import TargetConfig
from pretrainkit.config.typed import from_dict
from pretrainkit.data.instances import InstanceStream
from pretrainkit.errors import CheckpointError, ConfigError
from pretrainkit.registry import Registry
from pretrainkit.tokenization import Tokenizer

log = logging.getLogger(__name__)

TASK_FILE = "task.json"


@dataclass
class TaskOptions:
    """Options every task has; a task's own options subclass this (CLI flags come from the
    fields, help from the docstrings)."""

    seq_length: int = 128
    """Tokens per input, special tokens included; longer inputs are cut."""

    def __post_init__(self) -> None:
        if not isinstance(self.seq_length, int) or self.seq_length < 2:
            raise ConfigError(f"seq_length must be an integer >= 2, got {self.seq_length!r}")


@dataclass
class PackOptions(TaskOptions):
    """The options of a task whose training instances are one token sequence each, read by a
    head that needs no other row of the batch: such batches may be packed."""

    pack: bool = False
    """Pack several training examples into each row of a batch (block-diagonal attention,
    positions restarting per example) instead of padding every example to the batch's longest:
    the same examples and loss with less work when lengths vary. Recorded in the model folder:
    its evaluation and prediction batches are packed too (``Task.eval_batches``; SAMP's stay
    padded). Transformer encoders only; not with perturbed training (EP/AP/R, FGM, PGD)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.pack, bool):
            raise ConfigError(f"pack must be true or false, got {self.pack!r}")


class Task(ABC):
    """One downstream problem. Subclasses set the class attributes and the abstract methods.

    Args:
        options: the task's options (an instance of ``options_class``).
        labels: the label set, when the task has one and it is already known (a fine-tuned
            folder); ``None`` until ``fit_labels`` sees the training data.
    """

    name: ClassVar[str]
    options_class: ClassVar[type[TaskOptions]] = TaskOptions
    reads_decoder: ClassVar[bool] = False
    """Whether the head reads the decoder of a sequence-to-sequence body (text2text,
    speech2text). Other heads read the encoder: fine-tuning a seq2seq body for them keeps its
    embedding and encoder only (``ModelConfig.encoder_only``)."""
    metric_names: tuple[str, ...]
    """The metrics ``metrics`` returns; the first is the one to select on (SAMP, folds). A class
    attribute, or set per instance by a task whose options choose its metrics (text2text)."""

    def __init__(self, options: TaskOptions | None = None, labels: list[str] | None = None):
        self.options: Any = options if options is not None else self.options_class()
        self.labels = labels

    # -- data ------------------------------------------------------------------------------
    @abstractmethod
    def read(
        self, path: str | Path, require_labels: bool = True, columns: Sequence[str] | None = None
    ) -> Any:
        """The rows of a task file (``len()`` gives their number); a DataError naming the
        file and line for anything malformed. ``columns`` names the fields of a file without a
        header, where the format has columns."""

    def fit_labels(self, train: Any) -> None:  # noqa: B027 - tasks without a label set
        """Take the label set from the training rows (tasks with one override this)."""

    def subset(self, data: Any, rows: list[int]) -> Any:
        """The rows ``rows`` of ``data`` (cross-validation folds). The default handles a
        dataclass whose list fields hold one value per row."""
        if not dataclasses.is_dataclass(data) or isinstance(data, type):
            raise ConfigError(f"task {self.name}: its data cannot be split into folds")
        size = len(data)  # type: ignore[arg-type]
        changes = {
            f.name: [value[i] for i in rows]
            for f in dataclasses.fields(data)
            if isinstance(value := getattr(data, f.name), list) and len(value) == size
        }
        return dataclasses.replace(data, **changes)  # type: ignore[type-var]

    @abstractmethod
    def stream(
        self, data: Any, tokenizer: Tokenizer, seed: int, rank: int, world_size: int
    ) -> InstanceStream:
        """The endless, resumable stream of training instances."""

    @property
    def packs(self) -> bool:
        """Whether this task's batches are packed (``PackOptions.pack``, asked for with ``--pack``
        and recorded in the model folder)."""
        return isinstance(self.options, PackOptions) and self.options.pack

    def collate(self, instances: list[dict[str, np.ndarray]], pad_id: int) -> dict[str, Any]:
        """The stream's instances → one training batch (padding to the longest by default). A
        task whose instance is several sequences (a question and its choices) flattens them
        here, so ``--batch-size`` and ``--epochs`` count its rows. Tasks with ``PackOptions``
        pack the batch when asked (``data.batching.collate_packed``)."""
        from pretrainkit.data.batching import collate, collate_packed

        if self.packs:
            return collate_packed(instances, pad_id)
        return collate(instances, pad_id)

    @abstractmethod
    def batches(self, data: Any, tokenizer: Tokenizer, batch_size: int) -> Iterator[dict]:
        """Model inputs in file order (for evaluation and prediction); no ``labels`` key.

        Keys that start with ``_`` are the task's own bookkeeping (e.g. which example a QA
        window belongs to): they reach ``row_outputs`` but not the model (``model_inputs``).
        A row of a batch may be part of a row of the data (one window of a long context);
        ``row_outputs``, ``metrics`` and ``prediction_lines`` then put the parts together.
        """

    def eval_batches(self, data: Any, tokenizer: Tokenizer, batch_size: int) -> Iterator[dict]:
        """``batches`` as evaluation and prediction run them: packed when the task packs its
        training batches (``PackOptions.pack``, recorded in the model folder), so a packed
        model is also evaluated without the padding's work. The rows and their order stay
        ``batches``'s; the model unpacks its output per example, so ``row_outputs`` reads
        what it reads from a padded batch. (SAMP calibrates on padded batches: its fused
        attention and ONNX export take the plain inputs.)"""
        batches = self.batches(data, tokenizer, batch_size)
        if not self.packs:
            return batches
        from pretrainkit.data.batching import pack_padded

        return (pack_padded(batch, tokenizer.pad_id) for batch in batches)

    # -- the head and its outputs -----------------------------------------------------------
    @abstractmethod
    def target(self) -> TargetConfig:
        """The head to put on the encoder."""

    @abstractmethod
    def row_outputs(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> list[Any]:
        """The head's output for each row of a batch, as numpy (float64)."""

    def batch_outputs(self, model: Any, batch: dict[str, Any]) -> list[Any]:
        """Each row's output for one batch of ``batches`` (evaluation and prediction): by
        default one forward pass read by ``row_outputs``; a task that generates its outputs
        (text2text) runs the decoding here instead."""
        return self.row_outputs(model(**model_inputs(batch)).logits, batch)

    @abstractmethod
    def gold(self, data: Any) -> list[Any]:
        """The reference answer of every row, in the form ``metrics`` compares against."""

    @abstractmethod
    def metrics(self, outputs: list[Any], gold: list[Any]) -> dict[str, float]:
        """Every name of ``metric_names`` → its value (fractions, not points)."""

    @abstractmethod
    def prediction_lines(self, outputs: list[Any], data: Any) -> list[str]:
        """The prediction file: a header line, then one line per row of ``data``."""

    def divergence(self, reference: list[Any], outputs: list[Any]) -> float:
        """How far ``outputs`` are from ``reference`` (SAMP's sensitivity): mean KL of the
        softmax over the last axis; tasks with other outputs override it."""
        p = torch.from_numpy(np.concatenate([np.atleast_2d(r) for r in reference])).log_softmax(-1)
        q = torch.from_numpy(np.concatenate([np.atleast_2d(o) for o in outputs])).log_softmax(-1)
        return float((p.exp() * (p - q)).sum(-1).mean())

    def prepare(self, tokenizer: Tokenizer) -> None:  # noqa: B027 - most heads need no vocabulary
        """Called by fine-tuning with the pre-trained model's tokenizer before ``target()``: a head
        that depends on the vocabulary (the prompt task's label-word ids) reads it here."""

    def prepare_model(self, base: Any) -> None:  # noqa: B027 - most heads fit any body
        """Called by fine-tuning with the pre-trained model before ``target()``: a task whose
        head depends on the body (text2text: a decoder's LM head, or a causal encoder's) reads
        it here."""

    def initial_head(self, base: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Weights for the head of ``target()`` taken from the pre-trained model's heads (``base``:
        its targets by name), loaded strictly over the fresh head; empty (the default): the head
        starts fresh."""
        return {}

    def encode_defaults(self) -> dict[str, Any]:
        """Settings ``Model.encode`` / ``embed`` should use with the fine-tuned model (an
        embedding task's pooling); merged over the pre-trained model's own."""
        return {}

    def tunes_on_dev(self) -> bool:
        """Whether ``tune`` would change options given a dev set (fine-tuning without one says
        so, instead of silently keeping them)."""
        return False

    def tune(self, outputs: list[Any], gold: list[Any]) -> bool:
        """Fit options on a dev evaluation's outputs during fine-tuning (a decision threshold);
        True when the options changed, so that the saved ``task.json`` records them."""
        return False

    def train_defaults(self, hidden_size: int, steps: int) -> dict[str, Any]:
        """Training options (``TrainConfig`` fields) that work for this task at this model
        width and number of steps, applied where the user set none (see ``finetune --help``)."""
        return {}

    # -- the record in the model folder -------------------------------------------------------
    @classmethod
    def recorded_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """The options of a ``task.json`` as this version reads them (a task that stopped
        taking an option drops the value older folders recorded for it)."""
        return options

    def record(self) -> dict[str, Any]:
        """What ``task.json`` holds: enough to rebuild this task."""
        return {
            "name": self.name,
            "options": dataclasses.asdict(self.options),
            "labels": self.labels,
        }


TASKS: Registry[type[Task]] = Registry("task")


def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    """The keys of a task batch the model takes (``_``-prefixed ones are the task's own)."""
    return {k: v for k, v in batch.items() if not k.startswith("_")}


def build_task(
    name: str, options: dict[str, Any] | None = None, labels: list[str] | None = None
) -> Task:
    """The task ``name`` with ``options`` (unknown keys are errors naming the task)."""
    cls = TASKS.get(name)
    return cls(from_dict(cls.options_class, dict(options or {}), f"task {name}"), labels)


def task_from_record(record: Any, where: str) -> Task:
    """The task a model folder recorded in ``task.json``."""
    if not isinstance(record, dict) or not isinstance(record.get("name"), str):
        raise CheckpointError(f"{where}: {TASK_FILE} must hold an object with a task name")
    labels = record.get("labels")
    if labels is not None and not (
        isinstance(labels, list) and all(isinstance(x, str) for x in labels)
    ):
        raise CheckpointError(f"{where}: {TASK_FILE} labels must be a list of strings")
    options = record.get("options") or {}
    if isinstance(options, dict):
        options = TASKS.get(record["name"]).recorded_options(options)
    return build_task(record["name"], options, labels)


def task_of(model: Any, where: str = "model") -> Task:
    """The task a fine-tuned model solves, from its folder's ``task.json``.

    Folders fine-tuned before ``task.json`` existed hold a classification or regression head
    without a record; they are read as that task (with its default options) and said so.
    """
    record = getattr(model, "task_record", None)
    if record is not None:
        return task_from_record(record, where)
    targets = model.target_modules()
    for name in ("classification", "regression"):  # the two tasks that predate task.json
        if name in targets:
            log.info("%s has no %s; reading it as a %s model", where, TASK_FILE, name)
            labels = getattr(targets[name], "labels", None)
            return build_task(name, {}, list(labels) if labels else None)
    raise ConfigError(
        f"{where}: not a fine-tuned model (no {TASK_FILE}; targets: {list(targets) or 'none'}); "
        f"fine-tune it first with `pretrainkit finetune --task ...`"
    )
