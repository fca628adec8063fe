"""The sharded checkpoint format on disk: ``sharded/index.json`` and the checks made before
any shard is read (``distributed.sharded_checkpoint`` writes and loads it, ``convert
--from-checkpoint`` consolidates it).

DCP's Hugging Face reader opens every ``*.safetensors`` file in a folder and leaves a region that
no stored chunk covers as it was, silently. So a shard folder must hold exactly the files
``index.json`` lists (all of which the checkpoint's manifest covers), each chunk inside its
tensor, and every tensor covered whole; only the safetensors headers (JSON) are read for that.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pretrainkit.errors import CheckpointError

SHARDED = "sharded"
INDEX = "index.json"
FORMAT = "pretrainkit-sharded-checkpoint"
PARTS = ("model", "optimizer")
_SHARDING_KEY = "DCP_SHARDING_INFO"  # DCP's key in a shard's safetensors header
_OFFSETS_KEY = "saved_offsets"
_DTYPES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float64: "F64",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def index_path(checkpoint: Path) -> Path:
    """Where a checkpoint folder's sharded-format index is (whether or not it exists)."""
    return Path(checkpoint) / SHARDED / INDEX


def is_sharded(checkpoint: Path) -> bool:
    """True for a checkpoint folder written with ``checkpoint_format`` sharded."""
    return index_path(checkpoint).is_file()


def describe(tensors: dict[str, Tensor]) -> dict[str, dict[str, Any]]:
    """Each tensor's whole shape and dtype (a DTensor's global ones), for ``index.json``."""
    described = {}
    for name, tensor in tensors.items():
        if tensor.dtype not in _DTYPES:
            raise CheckpointError(f"{name}: dtype {tensor.dtype} cannot be stored as safetensors")
        described[name] = {"shape": list(tensor.shape), "dtype": _DTYPES[tensor.dtype]}
    return described


def read_index(checkpoint: Path) -> dict[str, Any]:
    """``sharded/index.json`` of a checkpoint, its shape checked, and every shard folder
    checked against it (exactly the listed files, every tensor covered whole).

    Raises:
        CheckpointError: Naming the file and what is wrong.
    """
    path = index_path(checkpoint)
    if not path.is_file():
        raise CheckpointError(
            f"{checkpoint}: not a sharded checkpoint (no {SHARDED}/{INDEX}); give a "
            "RUN/checkpoints/step-N folder of a run trained with --checkpoint-format sharded"
        )
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: unreadable: {error}") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a pretrainkit sharded-checkpoint index")
    if index.get("version") != 1:
        raise CheckpointError(f"{path}: version {index.get('version')!r}; this pretrainkit reads 1")
    try:
        for part in PARTS:
            entry = index[part]
            if not isinstance(entry["files"], list) or not isinstance(entry["tensors"], dict):
                raise TypeError(f"{part}: files must be a list, tensors an object")
            check_shards(Path(checkpoint) / SHARDED / part, entry["files"], entry["tensors"])
        if not isinstance(index["model_files"], list):
            raise TypeError("model_files must be a list")
        if not isinstance(index["optimizer"]["param_groups"], list):
            raise TypeError("optimizer param_groups must be a list")
    except (KeyError, TypeError) as error:
        raise CheckpointError(f"{path}: malformed: {error!r}") from None
    return index


def check_shards(folder: Path, files: list[str], tensors: dict[str, Any]) -> None:
    """The folder holds exactly ``files``, whose chunks lie inside and cover every tensor.

    Reads only the safetensors headers (JSON). A shard that is missing, extra, unreadable
    or holding other tensors is a CheckpointError naming it.
    """
    from safetensors import safe_open

    present = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    missing = sorted(set(files) - set(present))
    if missing:
        raise CheckpointError(f"{folder}: shard {missing[0]} is missing ({INDEX} lists it)")
    extra = sorted(set(present) - set(files))
    if extra:
        raise CheckpointError(f"{folder}: {extra[0]} is not a shard {INDEX} lists")
    stored = dict.fromkeys(tensors, 0)
    for name in files:
        path = folder / name
        try:
            with safe_open(str(path), framework="pt") as shard:
                info = json.loads((shard.metadata() or {}).get(_SHARDING_KEY, "{}"))
                for key in shard.keys():
                    piece = shard.get_slice(key)
                    stored[key] = stored.get(key, 0) + _check_chunk(
                        key, piece.get_shape(), piece.get_dtype(), info[key][_OFFSETS_KEY], tensors
                    )
        except CheckpointError as error:
            raise CheckpointError(f"{path}: {error}") from None
        except Exception as error:  # safetensors raises its own error types, json, KeyError
            raise CheckpointError(f"{path}: not a readable shard: {error!r}") from None
    for key, spec in tensors.items():
        whole = math.prod(spec["shape"])
        if stored[key] != whole:
            raise CheckpointError(
                f"{folder}: {key} has {stored[key]} of its {whole} elements in the shards; a "
                "shard is missing or damaged"
            )


def _check_chunk(
    key: str, shape: list[int], dtype: str, offsets: list[int], tensors: dict[str, Any]
) -> int:
    """The elements of one stored chunk, after checking it belongs to a listed tensor."""
    spec = tensors.get(key)
    if spec is None:
        raise CheckpointError(f"holds {key}, which {INDEX} does not list")
    whole = spec["shape"]
    inside = len(offsets) == len(shape) == len(whole) and all(
        0 <= start and start + size <= limit for start, size, limit in zip(offsets, shape, whole)
    )
    if not inside:
        raise CheckpointError(f"{key}: chunk {shape} at {offsets} lies outside its shape {whole}")
    if dtype != spec["dtype"]:
        raise CheckpointError(f"{key} is {dtype}, {INDEX} says {spec['dtype']}")
    return math.prod(shape)


def check_names(path: Path, expected: dict[str, Any], found: dict[str, Tensor]) -> None:
    """The checkpoint's tensors are this model's (or optimizer's): same names, same shapes."""
    missing = sorted(set(found) - set(expected))
    unexpected = sorted(set(expected) - set(found))
    wrong = [
        f"{k}: checkpoint {tuple(expected[k]['shape'])} vs model {tuple(v.shape)}"
        for k, v in found.items()
        if k in expected and list(v.shape) != expected[k]["shape"]
    ]
    if missing or unexpected or wrong:
        parts = [
            f"{label} ({len(names)}): {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}"
            for label, names in (
                ("not in the checkpoint", missing),
                ("not in the model", unexpected),
                ("other shapes", wrong),
            )
            if names
        ]
        raise CheckpointError(f"{path} does not fit this model: {'; '.join(parts)}")
