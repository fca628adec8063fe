"""Checkpoint folders: written atomically, verified before use, rotated, found again and read
without pickle code.

Every checkpoint folder ends with ``manifest.json``, written last (after every process has
written its files, before the folder gets its name): each file's path, size and SHA-256. Resume
trusts a folder only when its files match it; a damaged one is skipped, kept under the name
``step-XXXXXXXX.damaged`` and reported, and the newest intact one is used instead.
"""

from __future__ import annotations

import hashlib
import json
import os
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
from pretrainkit.fileio import atomic_directory, inside, remove_stale_temporaries

TRAINER_STATE = "trainer_state.pt"
DATA_STATE = "data_state.json"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "pretrainkit-checkpoint-manifest"
DAMAGED_SUFFIX = ".damaged"
_STEP_DIR = re.compile(r"^step-(\d{8,})$")
_TEMPORARY = re.compile(r"^\.(tmp|old)-(?P<name>.+)-(?P<pid>\d+)$")
_CHUNK = 1 << 20


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    """The folder of the checkpoint taken after ``step`` optimizer steps."""
    return Path(run_dir) / "checkpoints" / f"step-{step:08d}"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """The checkpoint folders of a run as ``(step, folder)``, oldest first.

    A folder only gets its ``step-*`` name by an atomic rename after everything in it is
    written; whether its files are still intact is ``verify_checkpoint``'s question, so that a
    damaged one is reported rather than silently passed over.
    """
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The most recent checkpoint folder (not verified), or None when there is none."""
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def remove_leftovers(directory: Path) -> None:
    """Delete the temporaries (``.tmp-*``, ``.old-*``) that killed processes left in ``directory``.

    Those of a process that still runs (another job writing into the same run folder) stay.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return
    names = {m["name"] for m in map(_TEMPORARY.match, os.listdir(directory)) if m is not None}
    for name in sorted(names):
        remove_stale_temporaries(directory / name)


# -- the manifest -------------------------------------------------------------------------


def file_digest(path: Path) -> str:
    """The SHA-256 of a file, read in chunks (checkpoints can be larger than memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(folder: Path, step: int) -> Path:
    """Write ``manifest.json`` listing every other file of ``folder`` with its size and SHA-256.

    Called last, once every process has written its files, so that it covers all of them.
    """
    folder = Path(folder)
    files = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if relative == MANIFEST or not path.is_file():
            continue
        files[relative] = {"size": path.stat().st_size, "sha256": file_digest(path)}
    manifest = {"format": MANIFEST_FORMAT, "version": 1, "step": step, "files": files}
    target = folder / MANIFEST
    target.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return target


def verify_checkpoint(folder: Path) -> str | None:
    """Check a checkpoint folder against its manifest; None when intact, else what is wrong.

    Every listed file must be there with the listed size and SHA-256, and the trainer state
    and data position must be listed. Files the manifest does not list are ignored (and never
    read). A folder without a manifest cannot be verified, which counts as damaged.
    """
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        return (
            f"no {MANIFEST}, so its files cannot be verified (damaged, or written by an older "
            "pretrainkit; --trust-checkpoint resumes from it unverified)"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return f"{MANIFEST} is unreadable: {error}"
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        return f"{MANIFEST} is not a pretrainkit checkpoint manifest"
    files = manifest.get("files")
    if not isinstance(files, dict):
        return f"{MANIFEST} lists no files"
    problems = [
        f"{name} is not listed in {MANIFEST}"
        for name in (TRAINER_STATE, DATA_STATE)
        if name not in files
    ]
    for relative, entry in sorted(files.items()):
        problem = _check_file(folder, relative, entry, path)
        if problem:
            problems.append(problem)
    return "; ".join(problems) if problems else None


def _check_file(folder: Path, relative: str, entry: Any, manifest: Path) -> str | None:
    try:
        file = inside(folder, relative, manifest)
    except CheckpointError:
        return f"{relative!r} in {MANIFEST} points outside the checkpoint"
    if not isinstance(entry, dict) or not isinstance(entry.get("size"), int):
        return f"{relative}: its {MANIFEST} entry has no size and SHA-256"
    if not file.is_file():
        return f"{relative} is missing"
    size = file.stat().st_size
    if size != entry["size"]:
        return f"{relative} has {size} bytes, {MANIFEST} says {entry['size']}"
    try:
        digest = file_digest(file)
    except OSError as error:
        return f"{relative} is unreadable: {error.strerror or error}"
    if digest != entry.get("sha256"):
        return f"{relative} has other contents than {MANIFEST} lists (SHA-256 differs)"
    return None


def find_resumable(
    run_dir: Path, trust_unverified: bool = False
) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest intact checkpoint of a run, and the newer ones skipped with the reason.

    Args:
        run_dir: The run folder.
        trust_unverified: Also accept a checkpoint without a manifest (one written by an older
            pretrainkit); one whose files differ from its manifest is never accepted.

    Returns:
        ``(folder or None, [(skipped folder, why), ...])``, newest first.
    """
    skipped: list[tuple[Path, str]] = []
    for _, folder in reversed(list_checkpoints(run_dir)):
        problem = verify_checkpoint(folder)
        if problem is None or (trust_unverified and not (folder / MANIFEST).exists()):
            return folder, skipped
        skipped.append((folder, problem))
    return None, skipped


def set_aside(folder: Path) -> Path:
    """Rename a damaged checkpoint ``step-X`` to ``step-X.damaged`` (``.damaged-2``, ...).

    The name takes it out of resuming and rotation for good, and frees its step for the new
    checkpoint of the resumed run; its files are kept for the user to inspect.
    """
    folder = Path(folder)
    target = folder.with_name(folder.name + DAMAGED_SUFFIX)
    number = 2
    while os.path.lexists(target):
        target = folder.with_name(f"{folder.name}{DAMAGED_SUFFIX}-{number}")
        number += 1
    os.rename(folder, target)
    return target


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
    weights_in_shards: bool = False,
) -> Path:
    """Write ``checkpoints/step-XXXXXXXX/`` atomically, then delete all but the last ``keep_last``.

    Called on every process together: each may add per-process files (``write_shards``), the
    main process (the one given ``trainer_state``) writes the rest, then the manifest, and
    publishes the folder. Rotation only deletes checkpoints of earlier steps than ``step``.

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
        weights_in_shards: The weights are in the per-process files (the sharded format,
            which also writes the model's other files): no ``model.save`` here.

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
        if main and not weights_in_shards:
            save_weights(model, tmp, weights)  # first: Model.save replaces the whole folder
        if write_shards is not None:
            barrier()
            write_shards(tmp)
        if main:
            torch.save(trainer_state, tmp / TRAINER_STATE)
            (tmp / DATA_STATE).write_text(data_json, encoding="utf-8")
        barrier()  # the manifest must cover every process's files
        if main:
            write_manifest(tmp, step)
    if main:
        # Checkpoints past ``step`` are none of this run's business: they were set aside when
        # resuming, or belong to a run this one must not destroy.
        done = [folder for number, folder in list_checkpoints(run_dir) if number <= step]
        for old in done[:-keep_last]:
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


def load_data_states(checkpoint: Path) -> list[dict[str, Any]]:
    """Every data-parallel reader's position from ``data_state.json``, in rank order.

    A run resumed on as many readers takes its own; on another number, the batch source
    re-splits them (``load_reader_states``: the readers share one global order).

    Raises:
        CheckpointError: The file is unreadable or holds no list of positions.
    """
    path = Path(checkpoint) / DATA_STATE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: cannot read the data position: {error}") from None
    ranks = state["ranks"] if isinstance(state, dict) and "ranks" in state else [state]
    if not ranks or not all(isinstance(position, dict) for position in ranks):
        raise CheckpointError(f"{path}: expected a list of data positions, one per reader")
    return ranks


def load_data_state(checkpoint: Path, rank: int = 0, world_size: int = 1) -> dict[str, Any]:
    """This reader's data position from ``data_state.json``, saved by as many readers.

    ``rank`` and ``world_size`` are data-parallel: under tensor parallelism each group of
    processes that shares one batch has one position.

    Raises:
        CheckpointError: The file is unreadable, or was written by another number of readers
            (use `load_data_states` and the batch source's ``load_reader_states`` for that).
    """
    ranks = load_data_states(checkpoint)
    if len(ranks) != world_size:
        raise CheckpointError(
            f"{Path(checkpoint) / DATA_STATE}: written by {len(ranks)} data-parallel "
            f"reader(s), resumed with {world_size}"
        )
    return ranks[rank]


def save_model(
    model: nn.Module,
    directory: Path,
    weights: dict[str, torch.Tensor] | None = None,
    overwrite: bool = False,
) -> Path:
    """``model.save`` into ``directory``, atomically (readers never see a half-written model).

    ``weights``: the gathered full weights when the model itself holds only a shard.
    ``overwrite``: replace an existing model (a resumed run replaces its own final model).
    """
    with atomic_directory(Path(directory), fsync=True, overwrite=overwrite) as tmp:
        save_weights(model, tmp, weights)
    return Path(directory)
