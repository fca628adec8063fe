"""Fine-tuning, evaluation and prediction for every registered task, one code path each.

Nothing here knows a task by name: the task (``pretrainkit.tasks``) reads its files, makes the
batches, names the head, turns outputs into metrics and prediction lines. A fine-tuned model
folder records its task (``task.json``), so ``evaluate`` and ``predict`` rebuild it from there.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretrainkit.config.typed import from_dict
from pretrainkit.data import BatchIterator
from pretrainkit.distributed import (
    ParallelConfig,
    batch_plan,
    check_model,
    check_run,
    data_parallel_rank,
    data_parallel_size,
    is_main_process,
)
from pretrainkit.errors import CheckpointError, ConfigError, DataError
from pretrainkit.fileio import check_output, write_text_file
from pretrainkit.folders import load
from pretrainkit.model import Model, build_model
from pretrainkit.tasks import Task, build_task, task_of
from pretrainkit.workflows.run_folder import run_folder

log = logging.getLogger(__name__)

# The slots a task model takes over from the pre-trained one; the targets are the task's own.
_BODY = ("embedding", "encoder", "tgt_embedding", "decoder")


def task_model(base: Model, task: Task) -> Model:
    """``base``'s body (embedding, encoder and any decoder) with the task's head."""
    task.prepare_model(base)  # a head that depends on the body (a decoder's LM head)
    task.prepare(base.tokenizer)  # a head over the vocabulary needs its ids
    config = base.config
    if config.is_seq2seq and not task.reads_decoder:
        log.info("task %s reads the encoder: the decoder of the base model is left out", task.name)
        config = config.encoder_only()
    model = build_model(config.with_targets([task.target()]))
    for slot in _BODY:
        source, body = getattr(base, slot), getattr(model, slot)
        if source is not None and body is not None:  # strictly: the bodies match key for key
            body.load_state_dict(source.state_dict())
    state = task.initial_head(base.target_modules())
    if state:  # the task reuses a pre-trained head (prompt: the mlm head)
        (head,) = model.target_modules().values()
        head.load_state_dict(state)  # strict
        model.tie_weights()
    model.tokenizer = base.tokenizer
    # A converted sentence-transformers model keeps its pooling; an embedding task sets its own.
    model.encode_defaults = {**base.encode_defaults, **task.encode_defaults()}
    model.task_record = task.record()
    return model


@torch.no_grad()
def model_outputs(model: Model, task: Task, data: Any, batch_size: int = 64) -> list[Any]:
    """The head's output for every row of ``data``, in file order."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    outputs: list[Any] = []
    try:
        for batch in task.eval_batches(data, model.tokenizer, batch_size):
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            outputs += task.batch_outputs(model, batch)  # a forward pass, or generation
    finally:
        model.train(was_training)
    return outputs


def evaluate_task(model: Model, task: Task, data: Any, batch_size: int = 64) -> dict[str, float]:
    """The task's metrics of ``model`` on the labelled ``data``."""
    if len(data) == 0:
        raise DataError("no rows to evaluate", getattr(data, "path", None))
    return task.metrics(model_outputs(model, task, data, batch_size), task.gold(data))


def _train_config(task: Task, train: Any, hidden_size: int, steps: int | None) -> Any:
    """A TrainConfig as given, or one from the options the user set (a mapping) over the
    task's defaults for this model width and number of steps."""
    from pretrainkit.training import TrainConfig

    if not isinstance(train, dict):
        if steps is not None:
            train.steps = steps
            train.__post_init__()  # options that depend on steps, against the real number
        return train
    if steps is None:
        if "steps" not in train:
            raise ConfigError("finetune: give the number of steps or epochs")
        steps = train["steps"]
    defaults = task.train_defaults(hidden_size, int(steps)) if isinstance(steps, int) else {}
    chosen = {k: v for k, v in defaults.items() if k not in train}
    if chosen:
        log.info("%s defaults for this model: %s", task.name, chosen)
    return from_dict(TrainConfig, {**chosen, **train, "steps": steps}, "training")


def _recorded_task(net: Model, where: Any, seq_length: int | None) -> Task:
    task = task_of(net, str(where))
    if seq_length is not None:
        task.options = dataclasses.replace(task.options, seq_length=seq_length)  # validated
    return task


def _loaded(model: str | Path | Model) -> Model:
    net = model if isinstance(model, Model) else load(model)
    # Models that read token ids need their tokenizer; image models (a patch part) have none.
    if net.tokenizer is None and getattr(net.embedding, "token_part", "word") == "word":
        raise CheckpointError(f"{model}: the model folder has no tokenizer")
    return net


def finetune(
    task: str | Task,
    model: str | Path | Model,
    train_file: str | Path,
    dev_file: str | Path | None,
    out: str | Path,
    train: Any,
    batch_size: int | None = None,
    epochs: float | None = None,
    task_options: dict[str, Any] | None = None,
    strategy: str | ParallelConfig = "single",
    resume: bool = False,
    global_batch_size: int | None = None,
    columns: tuple[str, ...] | None = None,
    overwrite: bool = False,
    folds: int | None = None,
    perturb: dict[str, Any] | None = None,
    peft: str | None = None,
    peft_options: dict[str, Any] | None = None,
) -> dict:
    """Fine-tune ``model`` (a folder or a Model) on ``train_file`` for ``task``.

    Args:
        task: a registered task name (options from ``task_options``) or a Task.
        train: a TrainConfig, or a mapping of the TrainConfig options the user set: the task's
            defaults for the model's width fill the rest (``Task.train_defaults``).
        epochs: sets the steps from the training-set size and the global batch; the options
            that depend on the steps (warmup) are checked against that number.
        columns: the columns of header-less files, for formats that have columns.
        out: a new run folder, or an existing one with ``resume`` or ``overwrite``.
        folds: K-fold cross-validation on ``train_file`` instead (no ``dev_file``): one run
            per fold in ``out/fold-N``, each scored on its held-out fold; returns every fold's
            metrics with their mean and standard deviation.
        perturb: ``PerturbOptions`` values: train on clean and perturbed copies of every example
            (FGM / PGD, Embedding-Push, Attention-Pull, Robust targets; ``pretrainkit.perturb``).
        peft: train only a parameter-efficient method's tensors and the head (``lora``,
            ``adapter``, ``bitfit``, ``layernorm``; ``peft_options`` its options); the run's
            model is then a PEFT folder that references ``model`` (a folder) by hash.

    Under torchrun every process reads its own part of the rows; ``batch_size`` is per process
    (default 32), ``global_batch_size`` per optimizer step.
    """
    from pretrainkit.peft.options import is_peft_folder
    from pretrainkit.perturb.options import PerturbOptions

    spec = task if isinstance(task, Task) else build_task(task, task_options)
    perturbation = from_dict(PerturbOptions, dict(perturb or {}), "perturbed training")
    # Checked before anything is read or written.
    parallel, batch_size = check_run(strategy, _probe(train), batch_size, global_batch_size)
    if peft is not None and (isinstance(model, Model) or perturbation.active):
        raise ConfigError(
            "--peft needs the base model as a folder (recorded by path and hash) and cannot be "
            "combined with perturbed training yet"
        )
    if not isinstance(model, Model) and is_peft_folder(model):
        raise ConfigError(f"{model}: a PEFT folder; `pretrainkit merge` it to fine-tune it further")
    base = _loaded(model)
    train_data = spec.read(train_file, columns=columns)
    spec.fit_labels(train_data)
    common = {
        "train": train,
        "batch_size": batch_size,
        "epochs": epochs,
        "parallel": parallel,
        "resume": resume,
        "source": {"model": str(model), "train": str(train_file)},
        "perturb": perturbation if perturbation.active else None,
        "peft": None if peft is None else (peft, dict(peft_options or {}), str(model)),
    }
    if folds is None:
        dev_data = spec.read(dev_file, columns=columns) if dev_file else None
        return fit(spec, base, train_data, dev_data, out, overwrite=overwrite, **common)
    if dev_file is not None:
        raise ConfigError("--folds scores every fold on its held-out rows; drop --dev")
    if not isinstance(folds, int) or not 2 <= folds <= len(train_data):
        raise ConfigError(f"folds must be an integer from 2 to the {len(train_data)} rows")
    with run_folder(out, resume, overwrite) as folder:
        order = np.random.default_rng(_probe(train).seed).permutation(len(train_data))
        results = []
        for k, held_out in enumerate(np.array_split(order, folds)):
            rest = np.setdiff1d(order, held_out)
            result = fit(
                spec,
                base,
                spec.subset(train_data, rest.tolist()),
                spec.subset(train_data, sorted(held_out.tolist())),
                folder / f"fold-{k + 1}",
                overwrite=False,
                **common,
            )
            results.append(result["last_eval"])
            log.info("fold %d/%d: %s", k + 1, folds, result["last_eval"])
        report = {
            "task": spec.name,
            "folds": results,
            **{name: summary([r[name] for r in results]) for name in spec.metric_names},
        }
        if is_main_process():
            (folder / "folds.json").write_text(json.dumps(report, indent=2) + "\n")
        return report


def _probe(train: Any) -> Any:
    """``train`` as a TrainConfig for the checks made before the steps are known."""
    from pretrainkit.training import TrainConfig

    if not isinstance(train, dict):
        return train
    return from_dict(TrainConfig, {**train, "steps": 1, "warmup": 0}, "training")


def fit(
    spec: Task,
    base: Model,
    train_data: Any,
    dev_data: Any | None,
    out: str | Path,
    train: Any,
    batch_size: int,
    epochs: float | None,
    parallel: ParallelConfig,
    resume: bool,
    overwrite: bool,
    source: dict[str, str],
    perturb: Any = None,
    peft: tuple[str, dict[str, Any], str] | None = None,
    wrap: Callable[[Model], tuple[torch.nn.Module, dict[str, Any]]] | None = None,
) -> dict:
    """Fine-tune ``base`` on rows already read (``finetune``, each fold of ``--folds``, each
    task of ``continual``); ``peft``: (method, options, base folder) of a parameter-efficient
    run; ``wrap``: turns the task model into the TrainableModel the loop trains (a continual
    task's chosen groups) and returns what run.json records of it."""
    from pretrainkit.training import Trainer

    plan = batch_plan(parallel, batch_size, _probe(train).accumulate)
    steps = None
    if epochs is not None:
        steps = max(1, math.ceil(epochs * len(train_data) / plan["global_batch_size"]))
    config = _train_config(spec, train, base.config.hidden_size, steps)
    if dev_data is None and spec.tunes_on_dev():
        log.warning(
            "%s tunes options on a dev set; without --dev they stay as given: %s",
            spec.name,
            spec.record()["options"],
        )
    torch.manual_seed(config.seed)
    net = task_model(base, spec)
    trained: torch.nn.Module = net
    if peft is not None:  # only the method's tensors and the head train (pretrainkit.peft)
        from pretrainkit.peft.core import apply_peft
        from pretrainkit.peft.folder import base_reference

        trained = apply_peft(net, peft[0], peft[1], base_reference(peft[2]))
        peft = (peft[0], trained.method.record(), peft[2])  # every option, defaults included
    wrapped: dict[str, Any] = {}
    if wrap is not None:
        if peft is not None or perturb is not None:
            raise ConfigError("a wrapped task model cannot also take --peft or perturbed training")
        trained, wrapped = wrap(net)
    run = {
        "command": "finetune",
        "task": spec.record(),
        **source,
        "rows": len(train_data),
        "steps": config.steps,
        "lr": config.lr,
        "warmup": config.warmup,
        **({"perturb": dataclasses.asdict(perturb)} if perturb is not None else {}),
        **({"peft": {"method": peft[0], "options": peft[1]}} if peft is not None else {}),
        **wrapped,
        **plan,
    }
    check_model(parallel, net)  # tensor parallelism: heads and FFN width it must divide
    if spec.packs:
        check_packable(net, perturb)
    # Split over the data-parallel processes: a tensor-parallel group reads one batch.
    stream = spec.stream(
        train_data,
        base.tokenizer,
        config.seed,
        data_parallel_rank(parallel),
        data_parallel_size(parallel),
    )
    pad_id = base.tokenizer.pad_id if base.tokenizer is not None else 0  # no ids to pad: images
    batches = BatchIterator(stream, batch_size, pad_id, collate_fn=spec.collate)

    def evaluate(m: torch.nn.Module) -> dict[str, float]:
        if len(dev_data) == 0:  # type: ignore[arg-type]
            raise DataError("no rows to evaluate", getattr(dev_data, "path", None))
        outputs = model_outputs(net, spec, dev_data)  # type: ignore[arg-type]
        gold = spec.gold(dev_data)
        if spec.tune(outputs, gold):  # options fitted on dev (a threshold): task.json keeps them
            net.task_record = spec.record()  # the model the trainer saves
        return spec.metrics(outputs, gold)

    with run_folder(out, resume, overwrite) as folder:
        if is_main_process():
            (folder / "run.json").write_text(json.dumps(run, indent=2))
        trainer = Trainer(
            trained if perturb is None else perturbed(net, perturb),
            batches,
            config,
            folder,
            evaluate=evaluate if dev_data is not None else None,
            resume=resume,
            strategy=parallel,
        )
        return trainer.fit()


def check_packable(net: Model, perturb: Any) -> None:
    """Refuse ``--pack`` where packed rows would be read as plain ones, before anything is
    written: a stack without per-example attention, or perturbed training (which runs the
    embedding and encoder itself)."""
    from pretrainkit.encoders.transformer import TransformerEncoder

    if not isinstance(net.encoder, TransformerEncoder):
        raise ConfigError(
            f"--pack needs a transformer encoder (per-example attention), not "
            f"{type(net.encoder).__name__}"
        )
    if perturb is not None:
        raise ConfigError("--pack cannot be combined with perturbed training (EP/AP/R, FGM, PGD)")


def perturbed(net: Model, options: Any) -> torch.nn.Module:
    """``net`` wrapped to train on clean and perturbed examples (``pretrainkit.perturb``)."""
    from pretrainkit.perturb.centroids import token_counts
    from pretrainkit.perturb.module import Perturbed

    counts = None
    if options.centroid_text is not None:
        _, counts = token_counts(options.centroid_text, net.tokenizer, net.config.vocab_size)
    return Perturbed(net, options, counts)


def evaluate(
    model: str | Path | Model,
    data_file: str | Path,
    batch_size: int = 64,
    columns: tuple[str, ...] | None = None,
    seq_length: int | None = None,
) -> dict[str, Any]:
    """The metrics of a fine-tuned model (its folder records the task) on a labelled file;
    ``seq_length`` overrides the length the model was fine-tuned with."""
    net = _loaded(model)
    task = _recorded_task(net, model, seq_length)
    data = task.read(data_file, columns=columns)
    return {
        "data": str(data_file),
        "task": task.name,
        "rows": len(data),
        **evaluate_task(net, task, data, batch_size),
    }


def predict(
    model: str | Path | Model,
    data_file: str | Path,
    out_file: str | Path,
    batch_size: int = 64,
    columns: tuple[str, ...] | None = None,
    overwrite: bool = False,
    seq_length: int | None = None,
) -> Path:
    """Write the task's predictions for every row of ``data_file`` (labels optional), e.g.
    ``label<TAB>probability`` for classification. An existing ``out_file`` is replaced only
    with ``overwrite``."""
    check_output(out_file, overwrite, folder=False)  # before the work, not after it
    net = _loaded(model)
    task = _recorded_task(net, model, seq_length)
    data = task.read(data_file, require_labels=False, columns=columns)
    lines = task.prediction_lines(model_outputs(net, task, data, batch_size), data)
    return write_text_file(out_file, "".join(line + "\n" for line in lines), overwrite)


def summary(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation of per-fold values."""
    array = np.array(values, dtype=np.float64)
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return {"mean": float(array.mean()), "std": std}
