"""A sharded training checkpoint into a plain model folder (``convert --from-checkpoint``).

A checkpoint written with ``--checkpoint-format sharded`` holds the weights in one file per
process (``distributed.sharded_checkpoint``) beside the model folder's other files. Here one
process verifies it against its manifest, reads every shard into the whole model and writes
the folder ``pretrainkit.load`` reads: ``config.yaml``, ``model.safetensors`` (tied copies once,
as ``Model.save`` writes them), the tokenizer and the rest, whole or not at all.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from pretrainkit.errors import CheckpointError, ConfigError


def checkpoint_to_model(checkpoint: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Consolidate the sharded checkpoint ``checkpoint`` into the model folder ``out``.

    Everything is checked before ``out`` is touched: the checkpoint's files against its
    ``manifest.json`` (sizes, SHA-256), its ``sharded/index.json`` against the shard files
    (each listed one there, no other, every tensor covered whole) and the shards' tensors
    against the model its ``config.yaml`` builds.

    Raises:
        CheckpointError: Not a sharded checkpoint (a full one is a model folder already), a
            file missing, altered or not in the manifest; the message names it.
        OutputExistsError: ``out`` exists and ``overwrite`` is not set.
    """
    from pretrainkit.config import ModelConfig
    from pretrainkit.distributed.sharded_checkpoint import load_part
    from pretrainkit.distributed.sharded_index import (
        SHARDED,
        check_names,
        index_path,
        is_sharded,
        read_index,
    )
    from pretrainkit.fileio import atomic_directory, inside
    from pretrainkit.model import CONFIG, WEIGHTS, build_model
    from pretrainkit.training.checkpoint import MANIFEST, TRAINER_STATE, verify_checkpoint

    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        raise CheckpointError(f"{checkpoint}: no such checkpoint folder")
    if not is_sharded(checkpoint):
        if (checkpoint / WEIGHTS).is_file() and (checkpoint / TRAINER_STATE).is_file():
            raise ConfigError(
                f"{checkpoint}: a full checkpoint ({WEIGHTS} holds the whole model), not a "
                "sharded one: it loads as it is (pretrainkit.load, convert --to-hf)"
            )
        raise CheckpointError(
            f"{checkpoint}: not a sharded checkpoint (no {SHARDED}/{index_path(checkpoint).name}"
            "); give RUN/checkpoints/step-N of a run trained with --checkpoint-format sharded"
        )
    problem = verify_checkpoint(checkpoint)
    if problem is not None:
        raise CheckpointError(f"{checkpoint}: does not match its {MANIFEST}: {problem}")
    index = read_index(checkpoint)
    listed = set(_manifest_files(checkpoint))
    sources = []
    for relative in index["model_files"]:
        path = inside(checkpoint, str(relative), index_path(checkpoint))
        if relative not in listed:  # files the manifest does not list are never read
            raise CheckpointError(f"{checkpoint}: {relative} is not listed in its {MANIFEST}")
        sources.append((str(relative), path))
    if CONFIG not in index["model_files"]:
        raise CheckpointError(f"{index_path(checkpoint)}: lists no {CONFIG} among model_files")
    config = ModelConfig.load(checkpoint / CONFIG)
    with torch.device("meta"):  # no initialisation: every element comes from the shards
        model = build_model(config)
    model.to_empty(device="cpu")  # ties break here; the tied copies are not written anyway
    aliases = model.tied_parameters()
    weights = {k: v for k, v in model.state_dict().items() if k not in aliases}
    check_names(index_path(checkpoint), index["model"]["tensors"], weights)
    load_part(checkpoint, "model", weights)
    with atomic_directory(Path(out), overwrite=overwrite) as tmp:
        for relative, path in sources:
            (tmp / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, tmp / relative)
        tensors = {k: v.detach().contiguous() for k, v in weights.items()}
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": "pretrainkit"})
    return Path(out)


def _manifest_files(checkpoint: Path) -> list[str]:
    """The relative paths ``manifest.json`` lists (verified before this is called)."""
    import json

    from pretrainkit.training.checkpoint import MANIFEST

    return list(json.loads((checkpoint / MANIFEST).read_text(encoding="utf-8"))["files"])
