"""Fine-tuning, evaluation and prediction for sequence classification and regression."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretrainkit.config import TargetConfig
from pretrainkit.distributed import (
    ParallelConfig,
    batch_plan,
    check_run,
    is_main_process,
    rank,
    world_size,
)
from pretrainkit.errors import CheckpointError, ConfigError
from pretrainkit.fileio import check_output, write_text_file
from pretrainkit.model import Model, build_model, load
from pretrainkit.targets.classification import ClassificationTarget
from pretrainkit.tasks.metrics import classification_metrics
from pretrainkit.workflows.run_folder import run_folder

log = logging.getLogger(__name__)

TASKS = ("classification", "regression")


def classifier_of(model: Model, where: str) -> ClassificationTarget:
    """The model's classification target; a clear error when it has none or no tokenizer."""
    target = model.target_modules().get("classification")
    if not isinstance(target, ClassificationTarget):
        raise ConfigError(
            f"{where}: the model has no classification target (targets: "
            f"{list(model.targets)}); fine-tune it first"
        )
    if model.tokenizer is None:
        raise CheckpointError(f"{where}: the model folder has no tokenizer")
    return target


def task_model(
    base: Model,
    labels: list[str] | None,
    pooling: str,
    dropout: float,
    task: str = "classification",
) -> Model:
    """The same embedding and encoder with a fresh classification (or regression) target."""
    options: dict[str, Any] = {"pooling": pooling, "dropout": dropout}
    if task == "classification":
        options["labels"] = labels
    model = build_model(base.config.with_targets([TargetConfig(task, options)]))
    # Copied strictly: the embedding and encoder must match key for key.
    model.embedding.load_state_dict(base.embedding.state_dict())
    model.encoder.load_state_dict(base.encoder.state_dict())
    model.tokenizer = base.tokenizer
    return model


def regressor_of(model: Model, where: str) -> Any:
    """The model's regression target, or None; an error when it has no tokenizer."""
    target = model.target_modules().get("regression")
    if target is not None and model.tokenizer is None:
        raise CheckpointError(f"{where}: the model folder has no tokenizer")
    return target


@torch.no_grad()
def predict_scores(model: Model, data, seq_length: int, batch_size: int) -> np.ndarray:
    """Regression: the model's score for every row, in file order."""
    from pretrainkit.tasks.regression import regression_batches

    was_training = model.training
    model.eval()
    chunks = []
    for batch in regression_batches(data, model.tokenizer, seq_length, batch_size):
        batch = {k: v for k, v in batch.items() if k != "labels"}
        chunks.append(model(**batch).logits.float().cpu().numpy().reshape(-1))
    model.train(was_training)
    return np.concatenate(chunks) if chunks else np.zeros(0)


def evaluate_regression(
    model: Model, data, seq_length: int = 128, batch_size: int = 64
) -> dict[str, float]:
    from pretrainkit.tasks.metrics import regression_metrics
    from pretrainkit.tasks.regression import scores_of

    return regression_metrics(predict_scores(model, data, seq_length, batch_size), scores_of(data))


@torch.no_grad()
def predict_logits(model: Model, data, seq_length: int, batch_size: int) -> np.ndarray:
    from pretrainkit.tasks.classification import classification_batches

    target = classifier_of(model, "model")
    was_training = model.training
    model.eval()
    chunks = []
    for batch in classification_batches(
        data, model.tokenizer, target.labels, seq_length, batch_size
    ):
        batch = {k: v for k, v in batch.items() if k != "labels"}
        chunks.append(model(**batch).logits.float().cpu().numpy())
    model.train(was_training)
    return np.concatenate(chunks) if chunks else np.zeros((0, len(target.labels)))


def evaluate_model(
    model: Model, data, seq_length: int = 128, batch_size: int = 64
) -> dict[str, float]:
    if regressor_of(model, "model") is not None:
        return evaluate_regression(model, data, seq_length, batch_size)
    target = classifier_of(model, "model")
    logits = predict_logits(model, data, seq_length, batch_size)
    gold = np.array([target.labels.index(label) for label in data.labels])
    return classification_metrics(logits.argmax(-1), gold, len(target.labels))


def finetune(
    task: str,
    model: str | Path,
    train_file: str | Path,
    dev_file: str | Path | None,
    out: str | Path,
    train: Any,
    batch_size: int | None = None,
    seq_length: int = 128,
    epochs: float | None = None,
    pooling: str = "first",
    dropout: float = 0.1,
    strategy: str | ParallelConfig = "single",
    resume: bool = False,
    global_batch_size: int | None = None,
    columns: tuple[str, ...] | None = None,
    overwrite: bool = False,
) -> dict:
    """Fine-tune the model folder ``model`` on a classification TSV or a regression file
    (STS-B CSV, or a TSV with numeric labels).

    ``train`` is a TrainConfig, or with ``epochs`` also a mapping of its options without
    ``steps``: ``epochs`` sets the steps from the training-set size and the global batch, and
    the options that depend on the steps (warmup) are validated against that number. Under
    torchrun every process reads its own part of the rows; ``batch_size`` is per process
    (default 32), ``global_batch_size`` per optimizer step. ``columns`` names the columns of
    header-less files; ``out`` follows ``workflows.run_folder`` (``resume``, ``overwrite``).
    """
    from pretrainkit.tasks.classification import (
        ClassificationStream,
        label_set_of,
        read_classification_tsv,
    )
    from pretrainkit.training import Trainer

    if task not in TASKS:
        raise ConfigError(f"--task: {task!r} is not one of {', '.join(TASKS)}")
    from pretrainkit.config.typed import from_dict
    from pretrainkit.training import TrainConfig

    options = dict(train) if isinstance(train, dict) else None
    if options is not None:
        if epochs is None:
            raise ConfigError("finetune: train options without steps need epochs")
        # Checked now with a placeholder length; warmup is checked once the steps are known.
        train = from_dict(TrainConfig, {**options, "steps": 1, "warmup": 0}, "training")
    # Before anything is written.
    parallel, batch_size = check_run(strategy, train, batch_size, global_batch_size)
    plan = batch_plan(parallel, batch_size, train.accumulate)
    base = load(model)
    if base.tokenizer is None:
        raise CheckpointError(f"{model}: the model folder has no tokenizer")
    if task == "regression":
        from pretrainkit.tasks.regression import read_regression_file

        train_data = read_regression_file(train_file, columns=columns)
        labels = None
        dev_data = read_regression_file(dev_file, columns=columns) if dev_file else None
    else:
        train_data = read_classification_tsv(train_file, columns=columns)
        labels = label_set_of(train_data)
        dev_data = (
            read_classification_tsv(dev_file, label_set=labels, columns=columns)
            if dev_file
            else None
        )
    if epochs is not None:
        rows = epochs * len(train_data.texts_a)
        steps = max(1, math.ceil(rows / plan["global_batch_size"]))
        if options is not None:
            train = from_dict(TrainConfig, {**options, "steps": steps}, "training")
        else:
            train.steps = steps
            train.__post_init__()  # the options that depend on steps, against the real number
    torch.manual_seed(train.seed)
    net = task_model(base, labels, pooling, dropout, task)
    run = {
        "command": "finetune",
        "task": task,
        "model": str(model),
        "train": str(train_file),
        "dev": str(dev_file) if dev_file else None,
        "labels": labels,
        "steps": train.steps,
        "seq_length": seq_length,
        **plan,
    }
    stream: ClassificationStream
    if task == "regression":
        from pretrainkit.tasks.regression import RegressionStream

        stream = RegressionStream(
            train_data, base.tokenizer, seq_length, train.seed, rank(), world_size()
        )
    else:
        assert labels is not None
        stream = ClassificationStream(
            train_data, base.tokenizer, labels, seq_length, train.seed, rank(), world_size()
        )
    from pretrainkit.data import BatchIterator

    batches = BatchIterator(stream, batch_size, base.tokenizer.pad_id)

    def evaluate(m: torch.nn.Module) -> dict[str, float]:
        return evaluate_model(m, dev_data, seq_length)  # type: ignore[arg-type]

    with run_folder(out, resume, overwrite) as folder:
        if is_main_process():
            (folder / "run.json").write_text(json.dumps(run, indent=2))
        trainer = Trainer(
            net,
            batches,
            train,
            folder,
            evaluate=evaluate if dev_data else None,
            resume=resume,
            strategy=parallel,
        )
        return trainer.fit()


def predict(
    model: str | Path,
    data_file: str | Path,
    out_file: str | Path,
    seq_length: int = 128,
    batch_size: int = 64,
    columns: tuple[str, ...] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``label<TAB>probability`` (classification) or ``score`` (regression) for every
    row of ``data_file`` (labels optional; ``columns`` for a file without a header). An
    existing ``out_file`` is replaced only with ``overwrite``."""
    from pretrainkit.tasks.classification import read_classification_tsv

    check_output(out_file, overwrite, folder=False)  # before the work, not after it
    net = load(model)
    if regressor_of(net, str(model)) is not None:
        from pretrainkit.tasks.regression import read_regression_file

        data = read_regression_file(data_file, require_labels=False, columns=columns)
        scores = predict_scores(net, data, seq_length, batch_size)
        lines = ["score"] + [f"{value:.6f}" for value in scores]
    else:
        target = classifier_of(net, str(model))
        data = read_classification_tsv(
            data_file, label_set=target.labels, require_labels=False, columns=columns
        )
        logits = predict_logits(net, data, seq_length, batch_size)
        probs = torch.from_numpy(logits).softmax(-1).numpy()
        lines = ["label\tprobability"] + [
            f"{target.labels[int(row.argmax())]}\t{row.max():.6f}" for row in probs
        ]
    return write_text_file(out_file, "".join(line + "\n" for line in lines), overwrite)
