"""Reading the files of a HF model folder: config and weights (the tokenizer is in
``convert.tokenizer_files``, the sentence-transformers settings in ``convert.sentence_files``).

A folder received from someone else is data (DESIGN.md §7): weights are read as safetensors or
as a pickle restricted to tensors (``weights_only``), a damaged file is a CheckpointError naming
it, and a path written in a file (a shard of a sharded index) must stay inside the folder.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from pretrainkit.errors import CheckpointError
from pretrainkit.fileio import describe_os_error, inside, read_safetensors

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def require_folder(directory: Path) -> None:
    """A CheckpointError unless ``directory`` is a folder; a name that is not one may be meant
    for the model hub, which convert never contacts."""
    if not directory.exists():
        raise CheckpointError(
            f"{directory}: no such folder; convert reads a local HuggingFace model folder "
            "(config.json + weights) — there is no model hub access; download the folder "
            "elsewhere and pass its path"
        )
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: is a file; give the HuggingFace model folder")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except OSError as error:
        raise CheckpointError(f"cannot read {describe_os_error(error, path)}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON: {err}") from None


def read_weights(directory: Path) -> tuple[dict[str, torch.Tensor], str]:
    """All tensors of a HF folder (single file or sharded) and the file they came from."""
    for name in WEIGHT_FILES:
        index = directory / f"{name}.index.json"
        if index.is_file():
            return _read_sharded(directory, index), str(index)
        if (directory / name).is_file():
            return _read_one(directory / name), str(directory / name)
    raise CheckpointError(
        f"{directory}: no weights ({', '.join(WEIGHT_FILES)} or a sharded index) found"
    )


def _read_sharded(directory: Path, index: Path) -> dict[str, torch.Tensor]:
    """The tensors of every shard an index names; each tensor it lists must be in one of them,
    and none in two."""
    data = read_json(index)
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index}: expected a non-empty weight_map of tensor → file")
    bad = sorted(str(k) for k, v in weight_map.items() if not isinstance(v, str))
    if bad:
        raise CheckpointError(f"{index}: weight_map entries that are not file names: {bad[:5]}")
    # Checked before any shard is opened: a hostile index reads nothing outside the folder.
    shards = {shard: inside(directory, shard, index) for shard in sorted(set(weight_map.values()))}
    state: dict[str, torch.Tensor] = {}
    for path in shards.values():
        tensors = _read_one(path)
        twice = sorted(set(tensors) & set(state))
        if twice:
            raise CheckpointError(f"{path}: tensors also stored in another shard: {twice[:5]}")
        state.update(tensors)
    misplaced = sorted(str(name) for name in weight_map if name not in state)
    if misplaced:
        raise CheckpointError(
            f"{index}: tensors listed in weight_map but in none of its shards: {misplaced[:5]}"
        )
    return state


def _read_one(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path}: weights shard not found")
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    try:
        path.open("rb").close()
    except OSError as error:
        raise CheckpointError(f"cannot read {describe_os_error(error, path)}") from None
    try:
        # Pickle files can run code; weights_only refuses anything but tensors and containers.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001  (zip, pickle, torch and seek errors alike)
        raise CheckpointError(
            f"{path}: not a valid PyTorch weights file (truncated, damaged, or holding more "
            f"than tensors): {_reason(error)}"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict, got {type(state).__name__}")
    odd = sorted(str(k) for k, v in state.items() if not isinstance(v, torch.Tensor))
    if odd:
        raise CheckpointError(f"{path}: entries that are not tensors: {odd[:5]}")
    return state


def _reason(error: Exception) -> str:
    """What torch.load found wrong, without its advice (load with weights_only=False, allow the
    global), which would run whatever code the file holds."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    marker = "WeightsUnpickler error:"
    if marker in text:
        rest = [line.strip() for line in text.split(marker, 1)[1].splitlines() if line.strip()]
        detail = rest[0].split(" Please ")[0] if rest else "unsupported content"
        return f"not plain tensors ({detail})"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def optional_json(path: Path) -> dict[str, Any]:
    data = read_json(path) if path.is_file() else {}
    return data if isinstance(data, dict) else {}
