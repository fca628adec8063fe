"""Pre-training: token shards + a model spec → a trained model folder."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pretrainkit.config import load_model_config
from pretrainkit.data.objectives import get_objective
from pretrainkit.distributed import (
    ParallelConfig,
    batch_plan,
    check_model,
    check_run,
    data_parallel_rank,
    data_parallel_size,
    init_device,
    is_main_process,
)
from pretrainkit.errors import ConfigError
from pretrainkit.model import build_model
from pretrainkit.workflows.run_folder import run_folder

log = logging.getLogger(__name__)


def check_targets(objective: str, target_names: list[str], where: str) -> None:
    """The model must train exactly the targets the objective's instances feed, or training
    would silently ignore a head (``Objective.check_targets``)."""
    get_objective(objective).check_targets(target_names, where)


def objective_options_in_force(manifest: dict, given: dict[str, Any]) -> dict[str, Any]:
    """The objective options training uses: those recorded at preprocess time, replaced by
    ``given`` (validated; each replaced value logged, never silently ignored)."""
    objective = get_objective(manifest["objective"])
    recorded = manifest.get("objective_options", {})
    for key, value in given.items():
        if key in recorded and recorded[key] != value:
            log.warning(
                "objective option %s: using %r, not %r recorded in the shards at preprocess time",
                key,
                value,
                recorded[key],
            )
    return objective.configured({**recorded, **given}).options_dict()


def heldout_evaluator(
    dev: str | Path,
    tokenizer: Any,
    objective: str,
    batch_size: int,
    num_batches: int,
    options: dict[str, Any] | None = None,
) -> Callable[[torch.nn.Module], dict[str, float]]:
    """Mean loss and target metrics over the same ``num_batches`` batches of the dev shards.

    The batches (and their masks) are drawn once with a fixed seed, so every evaluation of a
    run scores exactly the same tokens and the curve is comparable across steps.
    """
    from pretrainkit.data import BatchIterator, Shards, pretraining_stream

    shards = Shards.open(dev)
    if shards.manifest["objective"] != objective:
        raise ConfigError(
            f"--dev {dev}: objective {shards.manifest['objective']!r} differs from the "
            f"training shards' {objective!r}"
        )
    if shards.tokenizer.vocab_size != tokenizer.vocab_size:
        raise ConfigError(
            f"--dev {dev}: its tokenizer has {shards.tokenizer.vocab_size} tokens, the "
            f"training shards' has {tokenizer.vocab_size}"
        )
    stream = pretraining_stream(shards, seed=12345, options=options)
    collate = get_objective(objective).collate
    source = BatchIterator(stream, batch_size, tokenizer.pad_id, collate_fn=collate)
    batches = [source.next_batch() for _ in range(num_batches)]

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        totals: dict[str, float] = {}
        for batch in batches:
            out = model(**{k: v.to(device) for k, v in batch.items()})
            for name, value in {"loss": out.loss, **out.metrics}.items():
                totals[name] = totals.get(name, 0.0) + float(value) / len(batches)
        return totals

    return evaluate


def pretrain(
    model: str | Path,
    data: str | Path,
    out: str | Path,
    train: Any,
    batch_size: int | None,
    overrides: dict[str, Any] | None = None,
    resume: bool = False,
    strategy: str | ParallelConfig = "single",
    dev: str | Path | None = None,
    eval_batches: int = 20,
    global_batch_size: int | None = None,
    overwrite: bool = False,
    objective_options: dict[str, Any] | None = None,
    pack: bool = False,
) -> dict:
    """Pre-train ``model`` (preset, YAML or folder config) on the shards in ``data``.

    The model's vocabulary size follows the shards' tokenizer. ``dev`` (shards of held-out
    text, same tokenizer and objective) is scored every ``train.eval_every`` steps and at the
    end, on ``eval_batches`` fixed batches. Under torchrun every process reads its own part of
    the shards; ``batch_size`` is per process, ``global_batch_size`` per optimizer step.
    ``out`` is a new run folder, or an existing one with ``resume`` or ``overwrite`` (see
    ``workflows.run_folder``). ``objective_options`` replace the objective options recorded in
    the shards' manifest; each replaced value is logged. ``pack`` packs each training batch's
    instances into as few rows as they fit (``Objective.collate_packed``: the same instances
    and loss without the padding's work; objectives ``bert``, ``albert``, ``mlm``, transformer
    encoders, not with pipeline parallelism); held-out batches stay padded.
    """
    from pretrainkit.data import BatchIterator, Shards, pretraining_stream
    from pretrainkit.training import Trainer

    # Before anything is written.
    parallel, batch_size = check_run(strategy, train, batch_size, global_batch_size, pipeline=True)
    if parallel.pipeline_parallel > 1 and dev is not None:
        raise ConfigError(
            f"--dev with pipeline_parallel {parallel.pipeline_parallel}: held-out evaluation "
            "through the pipeline is not supported yet (each process holds one stage); drop "
            "--dev and score the final model (RUN/model) in one process"
        )
    if train.eval_every and dev is None:
        raise ConfigError(
            "--eval-every needs held-out shards to score: pass --dev DIR "
            "(a corpus preprocessed with the same tokenizer and objective)"
        )
    shards = Shards.open(data)
    tokenizer = shards.tokenizer
    objective = shards.manifest["objective"]
    seq_length = int(shards.manifest["seq_length"])
    options = objective_options_in_force(shards.manifest, objective_options or {})
    config = load_model_config(str(model), overrides)
    if config.vocab_size != tokenizer.vocab_size:
        log.info(
            "vocab_size %d → %d to match the tokenizer of %s",
            config.vocab_size,
            tokenizer.vocab_size,
            data,
        )
        config = load_model_config(config, {"vocab_size": tokenizer.vocab_size})
    check_targets(objective, [t.name for t in config.targets], f"model {model}")
    if pack:
        get_objective(objective).check_packable()
    if pack and parallel.pipeline_parallel > 1:
        raise ConfigError(
            "--pack with pipeline_parallel > 1: micro-batches split a batch by rows, which "
            "packed rows do not allow; drop --pack"
        )
    emb = config.embedding
    if "position" in emb.parts and seq_length + emb.position_offset > emb.max_positions:
        raise ConfigError(
            f"the shards' seq_length {seq_length} (+ position_offset {emb.position_offset}) "
            f"exceeds the model's embedding.max_positions {emb.max_positions}"
        )
    evaluate = None
    if dev is not None:
        # Scored with the training's options, whatever the dev shards recorded.
        evaluate = heldout_evaluator(dev, tokenizer, objective, batch_size, eval_batches, options)
    torch.manual_seed(train.seed)
    with init_device(parallel):  # FSDP: only rank 0 allocates the whole model
        net = build_model(config)
    check_model(parallel, net)  # TP: heads and FFN width it must divide; PP: a stack to split
    if pack:
        from pretrainkit.workflows.finetune import check_packable

        check_packable(net, None)
    net.tokenizer = tokenizer
    run = {
        "command": "pretrain",
        "model": str(model),
        "data": str(data),
        "overrides": overrides or {},
        "dev": str(dev) if dev else None,
        "objective": objective,
        "objective_options": options,
        "seq_length": seq_length,
        "pack": pack,
        "parameters": sum(p.numel() for p in net.parameters()),
        **batch_plan(parallel, batch_size, train.accumulate),
    }
    stream = pretraining_stream(
        shards,
        seed=train.seed,
        # Split over the data-parallel processes: a tensor-parallel group (or a pipeline,
        # every stage) reads one batch.
        rank=data_parallel_rank(parallel),
        world_size=data_parallel_size(parallel),
        options=options,
    )
    chosen = get_objective(objective)
    collate = chosen.collate_packed if pack else chosen.collate
    batches = BatchIterator(stream, batch_size, tokenizer.pad_id, collate_fn=collate)
    with run_folder(out, resume, overwrite) as folder:
        if is_main_process():
            (folder / "run.json").write_text(json.dumps(run, indent=2))
        trainer = Trainer(
            net, batches, train, folder, evaluate=evaluate, resume=resume, strategy=parallel
        )
        split = getattr(trainer.engine, "split_record", None)
        if split and is_main_process():  # a pipeline's stage boundaries (and measured costs)
            run["pipeline_split"] = split
            (folder / "run.json").write_text(json.dumps(run, indent=2))
        return trainer.fit()
