"""Checkpoint folders: written atomically, rotated, found again and read without pickle code."""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

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
    trainer_state: dict[str, Any],
    data_state: dict[str, Any],
    keep_last: int,
) -> Path:
    """Write ``checkpoints/step-XXXXXXXX/`` atomically, then delete all but the last ``keep_last``.

    Args:
        run_dir: The run folder.
        step: Optimizer steps done.
        model: Has ``save(directory)`` (weights as safetensors, config, tokenizer).
        trainer_state: Optimizer, scheduler, RNG and counters; tensors and plain values only.
        data_state: The batch source's position, JSON-serialisable.
        keep_last: How many checkpoints to keep.

    Returns:
        The checkpoint folder.
    """
    try:
        data_json = json.dumps(data_state)
    except TypeError as error:
        raise CheckpointError(f"the batch source's state_dict() is not JSON: {error}") from None
    target = checkpoint_dir(run_dir, step)
    with atomic_directory(target, fsync=True) as tmp:
        model.save(tmp)  # type: ignore[operator]
        torch.save(trainer_state, tmp / TRAINER_STATE)
        (tmp / DATA_STATE).write_text(data_json, encoding="utf-8")
    for _, old in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return target


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


def load_data_state(checkpoint: Path) -> dict[str, Any]:
    """Read ``data_state.json`` of a checkpoint."""
    path = Path(checkpoint) / DATA_STATE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: cannot read the data position: {error}") from None


def save_model(model: nn.Module, directory: Path) -> Path:
    """``model.save`` into ``directory``, atomically (readers never see a half-written model)."""
    with atomic_directory(Path(directory), fsync=True) as tmp:
        model.save(tmp)  # type: ignore[operator]
    return Path(directory)
