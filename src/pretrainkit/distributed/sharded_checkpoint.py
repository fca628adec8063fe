"""Sharded checkpoints: every process writes its own part of the weights and optimizer state,
and a resume reads them back onto whatever layout it runs on (``--checkpoint-format sharded``).

The parts go through ``torch.distributed.checkpoint`` (DCP) with its Hugging Face storage, not
its default one. ``FileSystemWriter`` pickles its ``.metadata`` file (and every non-tensor
value), which ``FileSystemReader`` reads back with ``pickle.load``: a run folder received from
someone else must never be read that way (docs/SAFETY.md). ``HuggingFaceStorageWriter`` with
``save_distributed=True`` writes one plain safetensors file per process, each tensor's offset
in the whole in the file's JSON header (``DCP_SHARDING_INFO``), and no metadata file;
``HuggingFaceStorageReader`` rebuilds the layout from those headers with ``safe_open``. DCP
then reshards: every process reads the pieces of the stored chunks that overlap its own part.
Only tensors go through DCP (a non-tensor value would be written as pickled bytes): the
optimizer's parameter groups are JSON in ``index.json``; scheduler, counters and RNG stay in
the trainer state, as in the full format.

A checkpoint folder of this format holds, beside ``trainer_state.pt``, ``data_state.json`` and
``manifest.json`` (which covers every file below)::

    config.yaml, tokenizer/, ...        the model folder's files but the weights (rank 0)
    sharded/index.json                  what the shards hold: files, tensors, param groups
    sharded/model/shard-0000K-model-00001-of-00001.safetensors      process K-1's weights
    sharded/optimizer/shard-0000K-model-00001-of-00001.safetensors  its Adam moments, steps

The format's index and the checks made before a shard is read are in
``distributed.sharded_index``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from torch import Tensor, nn

from pretrainkit.distributed.sharded_index import (
    FORMAT,
    INDEX,
    PARTS,
    SHARDED,
    check_names,
    describe,
    index_path,
    read_index,
)
from pretrainkit.errors import CheckpointError, ConfigError

_SCRATCH = ".model-files"


def check_shardable(model: nn.Module) -> None:
    """The sharded format stores a five-slot ``Model`` (its folder's files beside the shards,
    rebuilt by ``convert --from-checkpoint``); recipes that wrap one are refused."""
    from pretrainkit.model import Model

    if not isinstance(model, Model):
        raise ConfigError(
            f"checkpoint_format 'sharded' stores a pretrainkit Model, but this run trains a "
            f"{type(model).__name__} (a recipe wrapping one: PEFT, perturbed training, "
            "distillation, continual learning); use --checkpoint-format full"
        )


def check_resumable(engine: Any, checkpoint: Path) -> None:
    """Refuse, naming the checkpoint, engines that do not load sharded checkpoints."""
    if engine.strategy_name != "deepspeed":
        return
    raise CheckpointError(
        f"{checkpoint}: a sharded checkpoint (--checkpoint-format sharded) resumes under "
        "strategy single, ddp or fsdp (tensor and pipeline parallelism included), not with "
        "strategy deepspeed; or make a model folder of it with `pretrainkit convert "
        "--from-checkpoint`"
    )


# -- the state as flat, name-keyed tensors ----------------------------------------------------


def model_tensors(engine: Any, reading: bool = False) -> dict[str, Tensor]:
    """This process's weights keyed by name (DTensors where sharded), tied copies once.

    Under pipeline parallelism a process may hold a tied copy without its source (the
    last stage's head, tied to the word embedding on stage 0). It is not written (stage 0
    writes the source, and both copies are equal) but, ``reading``, it is read from the
    source's stored values, under the source's name.
    """
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    state: dict[str, Any] = get_model_state_dict(engine.module)
    return _once(state, engine_aliases(engine), reading)


def _once(state: dict[str, Any], aliases: dict[str, str], reading: bool) -> dict[str, Any]:
    """``state`` without its tied copies; ``reading``, a copy whose source is not in ``state``
    is kept, under the source's name (see ``model_tensors``)."""
    kept: dict[str, Any] = {}
    for name, value in state.items():
        if name in aliases:
            if not reading or aliases[name] in state:
                continue
            name = aliases[name]
        kept[name] = value
    return kept


def aliases_of(model: nn.Module) -> dict[str, str]:
    tied = getattr(model, "tied_parameters", None)
    return tied() if callable(tied) else {}


def engine_aliases(engine: Any) -> dict[str, str]:
    """The tied copies of the engine's model (a pipeline keeps them from before its stages
    dropped the other stages' modules)."""
    aliases = getattr(engine, "aliases", None)
    return dict(aliases) if aliases is not None else aliases_of(engine.model)


def optimizer_state(engine: Any, reading: bool = False) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The optimizer state keyed by parameter name (DTensors where sharded) and its tensors
    as one flat dict ``{"<name>.<key>": tensor}`` that shares their storage; a tied copy's
    state as its weight is in ``model_tensors`` (the two copies take the same steps).

    A fresh optimizer gets its state first (one step of lr 0 on zero gradients, PyTorch's
    own way), so that a resume has tensors to read into.
    """
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    state: dict[str, Any] = dict(get_optimizer_state_dict(engine.module, engine.optimizer))
    flat: dict[str, Tensor] = {}
    for name, values in _once(state["state"], engine_aliases(engine), reading).items():
        for key, value in values.items():
            if not isinstance(value, Tensor):
                raise CheckpointError(
                    f"optimizer state {name}.{key} is {type(value).__name__}, not a tensor; the "
                    "sharded format stores tensors only (use --checkpoint-format full)"
                )
            flat[f"{name}.{key}"] = value
    return state, flat


# -- writing ----------------------------------------------------------------------------------


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


@contextlib.contextmanager
def _quiet_single_process() -> Iterator[None]:
    """DCP warns on every call without a process group, which is how one process runs."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def save_sharded(engine: Any, directory: Path) -> None:
    """Write this process's part of the weights and optimizer state into ``directory``
    (a checkpoint's temporary folder); rank 0 also writes the model's other files and
    ``index.json``. Called on every process together."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageWriter

    from pretrainkit.distributed.parallel import rank, world_size

    main = rank() == 0
    weights = model_tensors(engine)
    groups, moments = optimizer_state(engine)
    # Checked on every process alike before anything is written, so that all of them fail
    # together rather than some waiting in a collective. Under a pipeline each stage holds
    # other tensors: the index lists them all.
    described = _everyone(describe(weights)), _everyone(describe(moments))
    try:
        json.dumps(groups["param_groups"])
    except TypeError as error:
        raise CheckpointError(f"optimizer settings are not JSON: {error}") from None
    model_files = write_model_files(engine.model, directory) if main else []
    root = directory / SHARDED
    for part, tensors in zip(PARTS, (weights, moments)):
        writer = HuggingFaceStorageWriter(str(root / part), save_distributed=True)
        # Collective: when it returns, every process has written its file.
        with _quiet_single_process():
            dcp.save(tensors, storage_writer=writer, no_dist=not _distributed())
    if not main:
        return
    index = {
        "format": FORMAT,
        "version": 1,
        "world_size": world_size(),
        "layout": {
            "strategy": engine.strategy_name,
            "tensor_parallel": engine.tensor_parallel,
            "pipeline_parallel": engine.pipeline_parallel,
            "data_parallel": engine.data_world,
        },
        "model_files": model_files,
        "model": {
            "files": sorted(p.name for p in (root / "model").iterdir()),
            "tensors": described[0],
            "aliases": aliases_of(engine.model),
        },
        "optimizer": {
            "files": sorted(p.name for p in (root / "optimizer").iterdir()),
            "tensors": described[1],
            "param_groups": groups["param_groups"],
        },
    }
    (root / INDEX).write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")


def _everyone(described: dict[str, Any]) -> dict[str, Any]:
    """Every process's tensor descriptions merged (the same under every layout but a
    pipeline's, whose stages hold different tensors)."""
    import torch.distributed as dist

    if not _distributed():
        return described
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, described)
    merged: dict[str, Any] = {}
    for part in gathered:
        merged.update(part)
    return dict(sorted(merged.items()))


def write_model_files(model: nn.Module, directory: Path) -> list[str]:
    """Write the model folder's files but the weights (config, tokenizer, ...) into
    ``directory``; returns their paths relative to it.

    ``Model.save`` decides what a model folder holds; it is run with no weights into a
    scratch folder, whose (empty) weights file is dropped.
    """
    from pretrainkit.model import WEIGHTS

    scratch = directory / _SCRATCH
    model.save(scratch, state_dict={})  # type: ignore[operator]
    (scratch / WEIGHTS).unlink()
    files = sorted(p.relative_to(scratch).as_posix() for p in scratch.rglob("*") if p.is_file())
    for entry in list(scratch.iterdir()):
        entry.rename(directory / entry.name)
    shutil.rmtree(scratch)
    return files


# -- reading ----------------------------------------------------------------------------------


def load_part(checkpoint: Path, part: str, tensors: dict[str, Tensor]) -> None:
    """Fill ``tensors`` (this process's parts, DTensors where sharded) in place from the
    shards of ``part``, whatever layout wrote them; the folder was checked by ``read_index``."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader

    reader = HuggingFaceStorageReader(str(Path(checkpoint) / SHARDED / part))
    try:
        with _quiet_single_process():
            dcp.load(tensors, storage_reader=reader, no_dist=not _distributed())
    except Exception as error:  # DCP wraps every process's failure in CheckpointException
        raise CheckpointError(f"{checkpoint}: cannot read its {part} shards: {error}") from None


def load_sharded(engine: Any, checkpoint: Path, state: dict[str, Any]) -> None:
    """Restore weights, optimizer and engine state from a sharded checkpoint onto the
    engine's layout (any of single, DDP, FSDP, with or without TP). Every process calls it."""
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    index = read_index(checkpoint)
    path = index_path(checkpoint)
    weights = model_tensors(engine, reading=True)
    _check_names(engine, path, index["model"]["tensors"], weights)
    load_part(checkpoint, "model", weights)
    aliases = engine_aliases(engine)
    whole: dict[str, Any] = {
        name: weights[aliases.get(name, name) if name not in weights else name]
        for name in get_model_state_dict(engine.module)
    }
    set_model_state_dict(engine.module, whole)
    groups, moments = optimizer_state(engine, reading=True)
    _check_names(engine, path, index["optimizer"]["tensors"], moments)
    load_part(checkpoint, "optimizer", moments)  # in place: ``groups`` holds them
    groups["param_groups"] = _param_groups(path, index["optimizer"]["param_groups"], groups)
    try:
        set_optimizer_state_dict(engine.module, engine.optimizer, cast(Any, groups))
        if engine.scaler is not None and state.get("scaler"):
            engine.scaler.load_state_dict(state["scaler"])
    except (KeyError, ValueError, RuntimeError, TypeError) as error:
        raise CheckpointError(f"{path}: optimizer state does not fit: {error}") from None
    engine.per_tensor_updates()  # the saved flags may ask for a fused kernel (TP cannot)


def _check_names(engine: Any, path: Path, stored: dict[str, Any], found: dict[str, Any]) -> None:
    """``check_names`` on this process's tensors; under a pipeline each stage holds part of
    the stored ones, so what no stage holds is checked on the union, and every process
    learns whether any failed (none waits in a collective that another left)."""
    import torch.distributed as dist

    if engine.pipeline_parallel == 1:
        check_names(path, stored, found)
        return
    names = [None] * dist.get_world_size()
    dist.all_gather_object(names, sorted(found))
    union = {name for part in names for name in cast(list[str], part)}
    problem = ""
    try:  # this stage's tensors: all stored, with their shapes
        check_names(path, {k: v for k, v in stored.items() if k in found}, found)
    except CheckpointError as error:
        problem = str(error)
    unheld = sorted(set(stored) - union)
    if unheld and not problem:
        more = " ..." if len(unheld) > 5 else ""
        problem = (
            f"{path} does not fit this model: not in the model ({len(unheld)}): "
            f"{', '.join(unheld[:5])}{more}"
        )
    problems = [""] * dist.get_world_size()
    dist.all_gather_object(problems, problem)
    if any(problems):
        raise CheckpointError(next(p for p in problems if p))


def _param_groups(path: Path, saved: list[Any], current: dict[str, Any]) -> list[dict[str, Any]]:
    """The saved parameter groups with JSON's lists turned back into tuples (AdamW's betas);
    each group keeps this process's own parameters (a pipeline stage holds some only)."""
    groups = current["param_groups"]
    if len(saved) != len(groups) or not all(isinstance(g, dict) for g in saved):
        raise CheckpointError(
            f"{path}: {len(saved)} optimizer parameter group(s), this run has {len(groups)}"
        )
    restored = []
    for now, then in zip(groups, saved):
        group = {
            key: tuple(value)
            if isinstance(now.get(key), tuple) and isinstance(value, list)
            else value
            for key, value in then.items()
        }
        group["params"] = now["params"]
        restored.append(group)
    return restored
