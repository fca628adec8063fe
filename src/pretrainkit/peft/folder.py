"""PEFT model folders: only the trained tensors, and the base they need, checked by hash.

A folder holds ``peft.json`` (method, options, the base model folder's path and the sha256 of
its ``model.safetensors``), ``model.safetensors`` with the trained tensors alone (the method's
and the task head's), ``task_config.yaml`` (the task model's config: the base's body with the
task's head; not ``config.yaml``, so nothing mistakes the folder for a full model) and the task
record. Loading rebuilds the task model from the base and applies the saved tensors.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from pretrainkit.config import ModelConfig
from pretrainkit.errors import CheckpointError, check_tensor_keys
from pretrainkit.fileio import atomic_directory, read_json_object, read_safetensors
from pretrainkit.model import ENCODE_DEFAULTS, TASK, WEIGHTS, Model, build_model, model_folder
from pretrainkit.peft.core import BODY, BaseReference, PeftModel, apply_peft
from pretrainkit.peft.options import PEFT_RECORD

TASK_CONFIG = "task_config.yaml"
FORMAT = 1


def weights_sha256(folder: str | os.PathLike) -> str:
    """The sha256 of a model folder's ``model.safetensors`` bytes."""
    path = Path(folder) / WEIGHTS
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read the base model's weights: {error}") from None
    return digest.hexdigest()


def base_reference(base: str | os.PathLike) -> BaseReference:
    """The base model folder (a run folder gives its model/) by absolute path and hash."""
    folder = model_folder(base).resolve()
    return BaseReference(str(folder), weights_sha256(folder))


def peft_folder(directory: str | os.PathLike) -> Path | None:
    """``directory`` itself or its ``model/`` (a run folder) when it is a PEFT folder."""
    directory = Path(directory)
    for folder in (directory, directory / "model"):
        if (folder / PEFT_RECORD).is_file():
            return folder
    return None


def save_peft(
    peft: PeftModel,
    directory: str | os.PathLike,
    state: dict[str, torch.Tensor] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``peft``'s PEFT folder (``state``: full weights gathered from shards)."""
    model = peft.model
    source = model.state_dict() if state is None else state
    missing = [name for name in peft.trainable if name not in source]
    if missing:
        raise CheckpointError(f"the weights to save lack trained tensors {missing}")
    tensors = {name: source[name].detach().contiguous().cpu() for name in peft.trainable}
    record = {
        "format": FORMAT,
        "method": peft.method.name,
        "options": peft.method.record(),
        "base": {"path": peft.base.path, "sha256": peft.base.sha256},
        "trained_tensors": len(tensors),
        "trained_parameters": sum(t.numel() for t in tensors.values()),
    }
    directory = Path(directory)
    with atomic_directory(directory, overwrite=overwrite) as tmp:
        (tmp / PEFT_RECORD).write_text(json.dumps(record, indent=2) + "\n")
        model.config.save(tmp / TASK_CONFIG)
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": "pretrainkit-peft"})
        if model.task_record is not None:
            (tmp / TASK).write_text(json.dumps(model.task_record, indent=2) + "\n")
        if model.encode_defaults:
            (tmp / ENCODE_DEFAULTS).write_text(json.dumps(model.encode_defaults, indent=2))
    return directory


def load_trained(model: Model, trainable: list[str], directory: Path) -> None:
    """Load the trained tensors of a PEFT folder into ``model``, strictly."""
    path = directory / WEIGHTS if directory.is_dir() else directory
    state = read_safetensors(path)
    expected = model.state_dict()
    missing = sorted(set(trainable) - set(state))
    unexpected = sorted(set(state) - set(trainable))
    wrong = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in trainable
        if k in state and state[k].shape != expected[k].shape
    )
    check_tensor_keys(f"{path} does not match its peft.json", missing, unexpected, wrong)
    model.load_state_dict(state, strict=False)  # the rest comes from the base


def read_record(folder: Path) -> dict[str, Any]:
    path = folder / PEFT_RECORD
    record = read_json_object(path)
    if record.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a PEFT record of format {FORMAT}")
    for key in ("method", "options", "base"):
        if key not in record:
            raise CheckpointError(f"{path}: missing {key!r}")
    base = record["base"]
    if not isinstance(base, dict) or not {"path", "sha256"} <= set(base):
        raise CheckpointError(f"{path}: 'base' needs 'path' and 'sha256'")
    return record


def load_peft(directory: str | os.PathLike, base: str | os.PathLike | None = None) -> PeftModel:
    """A PEFT folder (or a run folder holding one) on its base model.

    Args:
        directory: the PEFT folder.
        base: the base model folder, instead of the path recorded in ``peft.json`` (a moved
            base); its weights must still have the recorded hash.

    Raises:
        CheckpointError: the base is missing or changed (its hash differs), or the folder's
            files do not fit each other.
    """
    from pretrainkit.folders import load

    folder = peft_folder(directory)
    if folder is None:
        raise CheckpointError(f"{directory}: not a PEFT folder (no {PEFT_RECORD})")
    record = read_record(folder)
    recorded = record["base"]
    base_path = Path(base) if base is not None else Path(recorded["path"])
    if not base_path.is_absolute():
        base_path = folder / base_path
    try:
        reference = base_reference(base_path)
    except CheckpointError as error:
        raise CheckpointError(
            f"{folder}: its base model {base_path} cannot be used: {error}"
        ) from None
    if reference.sha256 != recorded["sha256"]:
        raise CheckpointError(
            f"{folder}: the base model changed: {reference.path}/{WEIGHTS} has sha256 "
            f"{reference.sha256[:16]}…, {PEFT_RECORD} records {str(recorded['sha256'])[:16]}… "
            "(the adapters were trained on other weights; give the original base)"
        )
    base_model = load(reference.path)
    model = build_model(ModelConfig.load(folder / TASK_CONFIG))
    for slot in BODY:
        source, body = getattr(base_model, slot), getattr(model, slot)
        if (source is None) != (body is None) and body is not None:
            raise CheckpointError(f"{folder}: the base model has no {slot}")
        if source is not None and body is not None:
            try:
                body.load_state_dict(source.state_dict())
            except RuntimeError as error:
                raise CheckpointError(
                    f"{folder}/{TASK_CONFIG} does not fit the base's {slot}: {error}"
                ) from None
    model.tie_weights()
    model.tokenizer = base_model.tokenizer
    if (folder / TASK).is_file():
        model.task_record = read_json_object(folder / TASK)
    if (folder / ENCODE_DEFAULTS).is_file():
        model.encode_defaults = read_json_object(folder / ENCODE_DEFAULTS)
    peft = apply_peft(model, str(record["method"]), record["options"], reference)
    peft.load_weights(folder)
    return peft.eval()


def merge_folder(
    directory: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False
) -> Path:
    """Write the PEFT folder ``directory`` as a plain model folder ``out``: LoRA folded into
    the weights, BitFit / LayerNorm-only as the full model; adapters are an error."""
    peft = load_peft(directory)
    peft.method.merge(peft.model)
    model = peft.model
    model.requires_grad_(True)
    return model.save(out, overwrite=overwrite)
