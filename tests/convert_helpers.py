"""Shared pieces of the conversion tests: tiny odd sizes, the export check and a
corrupted-checkpoint runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from pretrainkit.convert import convert_from_hf, convert_to_hf
from pretrainkit.errors import CheckpointError

# Odd sizes (3 heads of 16, 3 layers) so that head and layer bookkeeping errors show.
SIZES = dict(
    vocab_size=1000,
    hidden_size=48,
    num_attention_heads=3,
    num_hidden_layers=3,
    intermediate_size=96,
    max_position_embeddings=40,
)


def broken_checkpoint_error(tmp_path, hf, change) -> str:
    """Save ``hf``, apply ``change`` to its tensors, convert; return the CheckpointError text."""
    hf.save_pretrained(tmp_path / "hf")
    path = tmp_path / "hf" / "model.safetensors"
    state = load_file(str(path))
    change(state)
    save_file(state, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError) as info:
        convert_from_hf(tmp_path / "hf", tmp_path / "ours")
    assert not (tmp_path / "ours").exists()  # nothing half-written
    return str(info.value)


def export_bit_exact(model_dir: Path, tmp_path: Path, hf, auto):
    """Export ``model_dir``; require every tensor of ``tmp_path/hf`` back bit for bit, ``hf``'s
    architecture in config.json, and ``auto`` to load it with no missing, unexpected or
    misshapen keys. Returns the reloaded HF model."""
    back = convert_to_hf(model_dir, tmp_path / "back")
    original = load_file(str(tmp_path / "hf" / "model.safetensors"))
    returned = load_file(str(back / "model.safetensors"))
    assert sorted(returned) == sorted(original)
    assert [k for k in original if not torch.equal(original[k], returned[k])] == []
    assert json.loads((back / "config.json").read_text())["architectures"] == [type(hf).__name__]
    again, info = auto.from_pretrained(back, output_loading_info=True)
    assert type(again) is type(hf)
    assert not info["missing_keys"]
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    return again
