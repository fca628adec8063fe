"""Checkpoint folders: written atomically, rotated, found again and read without pickle code."""

from __future__ import annotations

import json
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pretrainkit.distributed.collective import barrier, shared_atomic_directory
from pretrainkit.errors import CheckpointError
from pretrainkit.fileio import atomic_directory

TRAINER_STATE = "trainer_state.pt"
DATA_STATE = "data_state.json"
_STEP_DIR = re.compile(r"^step-(\d{8,})$")


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    """The folder of the checkpoint taken after ``step`` optimizer steps."""
    return Path(run_dir) / "checkpoints" / f"step-{step:08d}"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run as ``(step, folder)``, oldest first.

    A folder only gets its ``step-*`` name by an atomic rename after everything in it is
    written, so a name that matches is complete; the file check guards against hand edits.
    """
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and (child / TRAINER_STATE).is_file() and (child / DATA_STATE).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The most recent complete checkpoint folder, or None when there is none."""
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def remove_leftovers(directory: Path) -> None:
    """Delete temporary folders a killed process left behind in ``directory``."""
    if Path(directory).is_dir():
        for child in Path(directory).iterdir():
            if child.is_dir() and child.name.startswith((".tmp-", ".old-")):
                shutil.rmtree(child, ignore_errors=True)


def rng_state() -> dict[str, Any]:
    """Every global random state the loop draws from, as tensors and plain Python values."""
    numpy_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        # numpy arrays are not on torch.load's weights_only allow-list; a tensor is.
        "numpy": {
            "bit_generator": numpy_state["bit_generator"],
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` captured."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": numpy_state["bit_generator"],
            "state": {
                "key": numpy_state["key"].numpy().astype(np.uint32),
                "pos": numpy_state["pos"],
            },
            "has_gauss": numpy_state["has_gauss"],
            "gauss": numpy_state["gauss"],
        }
    )
    if "cuda" in state and torch.cuda.is_available():
        if len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: nn.Module,
    trainer_state: dict[str, Any] | None,
    data_states: list[dict[str, Any]],
    keep_last: int,
    weights: dict[str, torch.Tensor] | None = None,
    write_shards: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``checkpoints/step-XXXXXXXX/`` atomically, then delete all but the last ``keep_last``.

    Called on every process together: each may add per-process files (``write_shards``), the
    main process (the one given ``trainer_state``) writes the rest and publishes the folder.

    Args:
        run_dir: The run folder.
        step: Optimizer steps done.
        model: Has ``save(directory)`` (weights as safetensors, config, tokenizer).
        trainer_state: Optimizer, scheduler, RNG and counters; tensors and plain values only.
            None on the processes that do not write it.
        data_states: Every process's data position (JSON-serialisable), in rank order.
        keep_last: How many checkpoints to keep.
        weights: The full weights to save when ``model.state_dict()`` holds only a shard.
        write_shards: Writes this process's own files into the folder.

    Returns:
        The checkpoint folder.
    """
    main = trainer_state is not None
    data_json = ""
    if main:
        try:
            data_json = json.dumps({"world_size": len(data_states), "ranks": data_states})
        except TypeError as error:
            raise CheckpointError(f"the batch source's state_dict() is not JSON: {error}") from None
    target = checkpoint_dir(run_dir, step)
    with shared_atomic_directory(target, fsync=True) as tmp:
        if main:
            save_weights(model, tmp, weights)  # first: Model.save replaces the whole folder
        if write_shards is not None:
            barrier()
            write_shards(tmp)
        if main:
            torch.save(trainer_state, tmp / TRAINER_STATE)
            (tmp / DATA_STATE).write_text(data_json, encoding="utf-8")
    if main:
        for _, old in list_checkpoints(run_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return target


def save_weights(
    model: nn.Module, directory: Path, weights: dict[str, torch.Tensor] | None
) -> None:
    """``model.save(directory)``, with gathered full ``weights`` when the model is sharded."""
    if weights is None:
        model.save(directory)  # type: ignore[operator]
    else:
        model.save(directory, state_dict=weights)  # type: ignore[operator]


def load_trainer_state(path: Path) -> dict[str, Any]:
    """Read ``trainer_state.pt`` with ``weights_only=True``: tensors and plain values, no code.

    Raises:
        CheckpointError: The file is missing, damaged or holds objects other than tensors and
            plain containers (which a safe load refuses).
    """
    path = Path(path)
    if path.is_dir():
        path = path / TRAINER_STATE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no trainer state in this checkpoint") from None
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise CheckpointError(f"{path}: cannot be loaded safely (weights_only): {error}") from None
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"{path}: not a pretrainkit trainer state")
    return state


def load_data_state(checkpoint: Path, rank: int = 0, world_size: int = 1) -> dict[str, Any]:
    """This process's data position from ``data_state.json`` of a checkpoint.

    Raises:
        CheckpointError: The file is unreadable, or was written by another number of processes
            (each process reads its own part of the data, so the positions do not carry over).
    """
    path = Path(checkpoint) / DATA_STATE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: cannot read the data position: {error}") from None
    ranks = state["ranks"] if isinstance(state, dict) and "ranks" in state else [state]
    if len(ranks) != world_size:
        raise CheckpointError(
            f"{path}: written by {len(ranks)} process(es), resumed with {world_size}; resume "
            f"with {len(ranks)} (the model in the checkpoint loads anywhere with pretrainkit.load)"
        )
    return ranks[rank]


def save_model(
    model: nn.Module, directory: Path, weights: dict[str, torch.Tensor] | None = None
) -> Path:
    """``model.save`` into ``directory``, atomically (readers never see a half-written model).

    ``weights``: the gathered full weights when the model itself holds only a shard.
    """
    with atomic_directory(Path(directory), fsync=True) as tmp:
        save_weights(model, tmp, weights)
    return Path(directory)
