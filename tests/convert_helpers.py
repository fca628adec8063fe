"""Shared pieces of the conversion tests: tiny odd sizes and a corrupted-checkpoint runner."""

from __future__ import annotations

import pytest
from safetensors.torch import load_file, save_file

from pretrainkit.convert import convert_from_hf
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
