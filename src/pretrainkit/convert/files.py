"""Reading the files of a HF model folder: config and weights (the tokenizer is in
``convert.tokenizer_files``, the sentence-transformers settings in ``convert.sentence_files``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from pretrainkit.errors import CheckpointError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON: {err}") from None


def read_weights(directory: Path) -> tuple[dict[str, torch.Tensor], str]:
    """All tensors of a HF folder (single file or sharded) and the file they came from."""
    for name in WEIGHT_FILES:
        index = directory / f"{name}.index.json"
        if index.is_file():
            shards = sorted(set(read_json(index).get("weight_map", {}).values()))
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(_read_one(directory / shard))
            return state, str(index)
        if (directory / name).is_file():
            return _read_one(directory / name), str(directory / name)
    raise CheckpointError(
        f"{directory}: no weights ({', '.join(WEIGHT_FILES)} or a sharded index) found"
    )


def _read_one(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path}: weights shard not found")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    # Pickle files can run code; weights_only refuses anything but tensors and containers.
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def optional_json(path: Path) -> dict[str, Any]:
    data = read_json(path) if path.is_file() else {}
    return data if isinstance(data, dict) else {}
