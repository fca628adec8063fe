"""Calibration / selection / report splits: a labelled task file turned into fixed batches once,
the model's outputs on them, the task metric and the divergence from the float outputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretrainkit.errors import ConfigError, DataError
from pretrainkit.model import Model

METRICS = {"classification": ("accuracy", "f1"), "regression": ("spearman", "pearson")}


@dataclass
class TaskSet:
    """A labelled split, tokenized once.

    Attributes:
        path: the file it came from.
        kind: ``classification`` or ``regression``.
        batches: model inputs (no labels), in file order.
        gold: class indices ``[n]`` (int) or scores ``[n]`` (float).
    """

    path: str
    kind: str
    batches: list[dict[str, torch.Tensor]]
    gold: np.ndarray

    def __len__(self) -> int:
        return len(self.gold)


def task_kind(model: Model, where: str = "model") -> str:
    """The downstream task the model's head solves; an error when it has no task head."""
    targets = model.target_modules()
    if "classification" in targets:
        return "classification"
    if "regression" in targets:
        return "regression"
    raise ConfigError(
        f"{where}: SAMP needs a model with a task head (classification or regression); "
        f"its targets are {list(targets) or 'none'} — fine-tune it first"
    )


def default_metric(kind: str) -> str:
    return METRICS[kind][0]


def check_metric(metric: str, kind: str) -> str:
    if metric not in METRICS[kind]:
        raise ConfigError(
            f"--metric {metric!r} does not apply to a {kind} model; use {', '.join(METRICS[kind])}"
        )
    return metric


def load_task_set(
    model: Model, path: str | Path, seq_length: int = 128, batch_size: int = 32
) -> TaskSet:
    """Read a labelled file for ``model``'s head: a classification TSV whose labels must be the
    head's, or a regression file (STS-B CSV or TSV with numeric labels)."""
    kind = task_kind(model)
    if model.tokenizer is None:
        raise ConfigError("SAMP: the model folder has no tokenizer")
    if kind == "classification":
        from pretrainkit.tasks.classification import classification_batches, read_classification_tsv

        head: Any = model.target_modules()["classification"]
        labels: list[str] = head.labels
        data = read_classification_tsv(path, label_set=labels)
        batches = list(
            classification_batches(data, model.tokenizer, labels, seq_length, batch_size)
        )
        gold = np.concatenate([b.pop("labels").numpy() for b in batches])
    else:
        from pretrainkit.tasks.regression import read_regression_file, regression_batches

        reg = read_regression_file(path)
        batches = list(regression_batches(reg, model.tokenizer, seq_length, batch_size))
        gold = np.concatenate([b.pop("labels").numpy() for b in batches]).astype(np.float64)
    if len(gold) == 0:
        raise DataError("no labelled rows", path)
    return TaskSet(str(path), kind, batches, gold)


@torch.no_grad()
def outputs(model: Model, data: TaskSet) -> np.ndarray:
    """The head's outputs on every row: logits ``[n, labels]`` or scores ``[n]`` (float64)."""
    was_training = model.training
    model.eval()
    try:
        chunks = [model(**batch).logits.double().numpy() for batch in data.batches]
    finally:
        model.train(was_training)
    out = np.concatenate(chunks)
    return out.reshape(len(out)) if data.kind == "regression" else out


def score(metric: str, out: np.ndarray, gold: np.ndarray) -> float:
    """The metric in points (x 100): accuracy, macro-F1, Spearman or Pearson."""
    from pretrainkit.tasks.metrics import accuracy, macro_f1, pearson, spearman

    if metric == "accuracy":
        return 100.0 * accuracy(out.argmax(-1), gold)
    if metric == "f1":
        return 100.0 * macro_f1(out.argmax(-1), gold, out.shape[-1])
    if metric == "spearman":
        return 100.0 * spearman(out, gold)
    if metric == "pearson":
        return 100.0 * pearson(out, gold)
    raise ConfigError(f"unknown metric {metric!r}")


def divergence(reference: np.ndarray, out: np.ndarray) -> float:
    """How far quantized outputs are from the float ones: mean KL(float ‖ quantized) of the
    softmax for logits ``[n, c]``, mean squared difference for scores ``[n]``."""
    if reference.ndim == 1:
        return float(np.mean((reference - out) ** 2))
    p = torch.from_numpy(reference).log_softmax(-1)
    q = torch.from_numpy(out).log_softmax(-1)
    return float((p.exp() * (p - q)).sum(-1).mean())
