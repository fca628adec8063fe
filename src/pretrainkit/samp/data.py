"""Calibration / selection / report splits: a labelled file of the model's task turned into
fixed batches once, the model's outputs on them, the task's metric and the divergence from
the float outputs. Everything task-specific comes from the task the model folder records."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretrainkit.errors import ConfigError, DataError
from pretrainkit.model import Model
from pretrainkit.tasks import Task, task_of
from pretrainkit.tasks.base import model_inputs


@dataclass
class TaskSet:
    """A labelled split, tokenized once.

    Attributes:
        path: the file it came from.
        task: the model's task (reads the file, scores the outputs).
        batches: model inputs (no labels), in file order.
        gold: the reference answer of every row, as the task scores them.
    """

    path: str
    task: Task
    batches: list[dict[str, torch.Tensor]]
    gold: list[Any]

    def __len__(self) -> int:
        return len(self.gold)


def model_task(model: Model, where: str = "model") -> Task:
    """The task the model's head solves; an error when it is not a fine-tuned model."""
    return task_of(model, where)


def default_metric(task: Task) -> str:
    return task.metric_names[0]


def check_metric(metric: str, task: Task) -> str:
    if metric not in task.metric_names:
        raise ConfigError(
            f"--metric {metric!r} does not apply to a {task.name} model; use "
            f"{', '.join(task.metric_names)}"
        )
    return metric


def load_task_set(
    model: Model, path: str | Path, seq_length: int | None = None, batch_size: int = 32
) -> TaskSet:
    """Read a labelled file of the model's task (labels must be the head's), tokenized once."""
    task = model_task(model)
    if seq_length is not None:
        from dataclasses import replace

        task.options = replace(task.options, seq_length=seq_length)
    if model.tokenizer is None:
        raise ConfigError("SAMP: the model folder has no tokenizer")
    data = task.read(path)
    if len(data) == 0:
        raise DataError("no labelled rows", path)
    batches = list(task.batches(data, model.tokenizer, batch_size))
    return TaskSet(str(path), task, batches, task.gold(data))


@torch.no_grad()
def outputs(model: Model, data: TaskSet) -> Any:
    """The head's output for every row (as the task reads them: logits, scores, ...); an
    array when the rows stack into one."""
    was_training = model.training
    model.eval()
    try:
        rows: list[Any] = []
        for batch in data.batches:
            rows += data.task.row_outputs(model(**model_inputs(batch)).logits, batch)
    finally:
        model.train(was_training)
    return _stacked(rows)


def _stacked(rows: list[Any]) -> Any:
    """One array when every row has the same shape (logits ``[n, c]``, scores ``[n]``), so the
    outputs compare as arrays; the list itself otherwise (tokens, spans)."""
    shapes = {np.shape(row) for row in rows}
    if len(shapes) == 1 and all(isinstance(r, (float, int, np.ndarray)) for r in rows):
        return np.asarray(rows, dtype=np.float64)
    return rows


def score(metric: str, out: list[Any], data: TaskSet) -> float:
    """The task's metric in points (x 100)."""
    return 100.0 * data.task.metrics(out, data.gold)[metric]


def divergence(reference: list[Any], out: list[Any], data: TaskSet) -> float:
    """How far quantized outputs are from the float ones, as the task measures it (mean KL of
    the softmax for logits, mean squared difference for scores)."""
    return data.task.divergence(reference, out)
