"""Checkpoints of a continual run as deltas: only the tensors a task changed, and the hashes
that chain them.

A delta folder holds ``delta.json`` (the task, the sha256 of the backbone it was trained on and
of the backbone after it, which tensors are backbone and which the task's head),
``delta.safetensors`` (those tensors), ``task_config.yaml`` (the task model's config) and
``task.json``. A matrix trained as a LoRA slot is stored as its two factors (``lowrank`` in the
record: the matrix, its factors' names and the scale) and applied as ``W + scale · B A``,
computed by ``lowrank_merged`` in an order that does not depend on the thread count. Applying the deltas of a run in order to the base backbone reproduces every
step's backbone bit for bit: each application checks the parent hash before and the result hash
after, so a delta applied to the wrong base is an error, never a silently different model.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from pretrainkit.errors import CheckpointError, check_tensor_keys
from pretrainkit.fileio import read_json_object, read_safetensors
from pretrainkit.model import TASK, Model

DELTA_RECORD = "delta.json"
DELTA_WEIGHTS = "delta.safetensors"
TASK_CONFIG = "task_config.yaml"
FORMAT = 1


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    """A hash of tensors' names, dtypes, shapes and bytes (not of a file's layout), so that
    the same weights hash the same wherever they come from."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().contiguous().cpu()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def lowrank_merged(
    weight: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scale: float
) -> torch.Tensor:
    """``weight + scale · b @ a`` (a ``[r, in]``, b ``[out, r]``), the same bits on every
    machine and thread count: each product of two float32 values is exact in float64 and the r
    terms are summed element by element in a fixed order (a matmul's blocking would change the
    sum's order, and with it the last bit after the cast, with the number of threads)."""
    total = torch.zeros(b.shape[0], a.shape[1], dtype=torch.float64, device=weight.device)
    for i in range(a.shape[0]):
        total += b[:, i : i + 1].double() * a[i : i + 1, :].double()
    return (weight.double() + total * float(scale)).to(weight.dtype)


def merged_state(
    state: dict[str, torch.Tensor], lowrank: dict[str, tuple[str, str, float]]
) -> dict[str, torch.Tensor]:
    """``state`` with every LoRA slot folded into its matrix and the factors dropped
    (``lowrank``: matrix name → factor A's name, factor B's name, scale)."""
    factors = {name for a, b, _ in lowrank.values() for name in (a, b)}
    out = {k: v for k, v in state.items() if k not in factors}
    for name, (a, b, scale) in lowrank.items():
        out[name] = lowrank_merged(state[name], state[a], state[b], scale)
    return out


def body_state(model: Model) -> dict[str, torch.Tensor]:
    """The backbone's tensors (parameters and buffers of every slot but the targets)."""
    from pretrainkit.peft.core import BODY

    tied = set(model.tied_parameters())
    return {
        k: v for k, v in model.state_dict().items() if k.split(".", 1)[0] in BODY and k not in tied
    }


def write_delta(
    directory: Path,
    model: Model,
    body: list[str],
    head: list[str],
    record: dict[str, Any],
    state: dict[str, torch.Tensor] | None = None,
    extra: dict[str, torch.Tensor] | None = None,
    lowrank: dict[str, tuple[str, str, float]] | None = None,
) -> None:
    """Write a delta folder into the (new, empty) ``directory``: the ``body`` and ``head``
    tensors of ``model`` (or of ``state``, gathered from shards) and the record, completed with
    the backbone's hash after the change (``extra``: backbone tensors the task model leaves
    out, hashed with it; ``lowrank``: LoRA slots, matrix → factor names and scale, whose
    factors are among ``body`` and whose matrices the hash sees merged)."""
    lowrank = dict(lowrank or {})
    source = model.state_dict() if state is None else state
    missing = [name for name in body + head if name not in source]
    if missing:
        raise CheckpointError(f"the weights to save lack the trained tensors {missing}")
    tensors = {name: source[name].detach().contiguous().cpu() for name in body + head}
    after = body_state(model) if state is None else {k: state[k] for k in body_state(model)}
    after = merged_state({**(extra or {}), **after}, lowrank)
    factors = {name for a, b, _ in lowrank.values() for name in (a, b)}
    full = {
        **record,
        "format": FORMAT,
        "body_tensors": [name for name in body if name not in factors],
        "lowrank": {name: [a, b, scale] for name, (a, b, scale) in lowrank.items()},
        "head_tensors": list(head),
        "sha256": state_sha256(after),
        "bytes": sum(t.numel() * t.element_size() for t in tensors.values()),
    }
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / DELTA_WEIGHTS), metadata={"format": "pretrainkit-delta"})
    (directory / DELTA_RECORD).write_text(json.dumps(full, indent=2) + "\n")
    model.config.save(directory / TASK_CONFIG)
    if model.task_record is not None:
        (directory / TASK).write_text(json.dumps(model.task_record, indent=2) + "\n")


def read_delta(directory: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """A delta folder's record and tensors, checked against each other."""
    directory = Path(directory)
    path = directory / DELTA_RECORD
    if not path.is_file():
        raise CheckpointError(f"{directory}: not a delta folder (no {DELTA_RECORD})")
    record = read_json_object(path)
    if record.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a delta record of format {FORMAT}")
    for key in ("parent_sha256", "sha256", "body_tensors", "head_tensors", "task"):
        if key not in record:
            raise CheckpointError(f"{path}: missing {key!r}")
    lowrank = record.setdefault("lowrank", {})
    if not isinstance(lowrank, dict) or not all(
        isinstance(v, list)
        and len(v) == 3
        and all(isinstance(n, str) for n in v[:2])
        and isinstance(v[2], int | float)
        for v in lowrank.values()
    ):
        raise CheckpointError(
            f"{path}: 'lowrank' must map each matrix to [factor A, factor B, scale]"
        )
    tensors = read_safetensors(directory / DELTA_WEIGHTS)
    factors = {name for a, b, _ in lowrank.values() for name in (a, b)}
    expected = set(record["body_tensors"]) | set(record["head_tensors"]) | factors
    check_tensor_keys(
        f"{directory / DELTA_WEIGHTS} does not match its {DELTA_RECORD}",
        sorted(expected - set(tensors)),
        sorted(set(tensors) - expected),
        [],
    )
    return record, tensors


def apply_delta(model: Model, directory: str | os.PathLike) -> dict[str, Any]:
    """Apply a delta's backbone tensors to ``model`` in place, checking the chain: the model's
    backbone must hash to the delta's parent, and to the delta's result after. Returns the
    record (its head tensors are not applied: they belong to the delta's own task)."""
    record, tensors = read_delta(directory)
    before = state_sha256(body_state(model))
    if before != record["parent_sha256"]:
        raise CheckpointError(
            f"{directory}: this delta was trained on a backbone with sha256 "
            f"{str(record['parent_sha256'])[:16]}…, the model given has {before[:16]}… (apply "
            "the deltas in order, on the run's base model)"
        )
    body = body_state(model)
    wrong = [
        f"{k}: delta {tuple(tensors[k].shape)} vs model {tuple(body[k].shape)}"
        for k in record["body_tensors"]
        if k not in body or tensors[k].shape != body[k].shape
    ]
    lowrank = {k: (a, b, float(scale)) for k, (a, b, scale) in record["lowrank"].items()}
    for k, (a, b, _) in lowrank.items():
        if k not in body or body[k].dim() != 2:
            wrong.append(f"{k}: a LoRA slot of the delta, not a matrix of the model")
        elif (tensors[b].shape[0], tensors[a].shape[1]) != body[k].shape or (
            tensors[a].shape[0] != tensors[b].shape[1]
        ):
            wrong.append(
                f"{k}: factors {tuple(tensors[b].shape)} @ {tuple(tensors[a].shape)} vs model "
                f"{tuple(body[k].shape)}"
            )
    if wrong:
        raise CheckpointError(f"{directory}: the delta does not fit the model: {wrong}")
    with torch.no_grad():
        for name in record["body_tensors"]:
            body[name].copy_(tensors[name])
        for name, (a, b, scale) in lowrank.items():
            body[name].copy_(lowrank_merged(body[name], tensors[a], tensors[b], scale))
    after = state_sha256(body_state(model))
    if after != record["sha256"]:
        raise CheckpointError(
            f"{directory}: applying the delta gave a backbone with sha256 {after[:16]}…, the "
            f"delta records {str(record['sha256'])[:16]}… (a changed or damaged file)"
        )
    return record
