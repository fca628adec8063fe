"""Pre-training: token shards + a model spec → a trained model folder."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from pretrainkit.config import load_model_config
from pretrainkit.errors import ConfigError
from pretrainkit.model import build_model

log = logging.getLogger(__name__)

# Which targets each shard objective feeds: the labels the loader makes must be the ones the
# model's targets read, or training would silently ignore a head.
OBJECTIVE_TARGETS = {
    "mlm": {"mlm"},
    "bert": {"mlm", "nsp"},
    "albert": {"mlm", "sop"},
    "lm": {"lm"},
}


def check_targets(objective: str, target_names: list[str], where: str) -> None:
    expected = OBJECTIVE_TARGETS.get(objective)
    if expected is None:
        raise ConfigError(f"{where}: unknown objective {objective!r}")
    if set(target_names) != expected:
        raise ConfigError(
            f"{where}: the data was preprocessed for objective {objective!r}, which trains "
            f"targets {sorted(expected)}, but the model has targets {target_names}. Preprocess "
            f"with the matching --objective or set the model's targets "
            f"(e.g. --model.targets '[{{name: mlm}}]')."
        )


def pretrain(
    model: str | Path,
    data: str | Path,
    out: str | Path,
    train: Any,
    batch_size: int,
    overrides: dict[str, Any] | None = None,
    resume: bool = False,
    strategy: str = "single",
) -> dict:
    """Pre-train ``model`` (preset, YAML or folder config) on the shards in ``data``.

    The model's vocabulary size follows the shards' tokenizer.
    """
    from pretrainkit.data import BatchIterator, Shards, pretraining_stream
    from pretrainkit.training import Trainer

    shards = Shards.open(data)
    tokenizer = shards.tokenizer
    objective = shards.manifest["objective"]
    seq_length = int(shards.manifest["seq_length"])
    config = load_model_config(str(model), overrides)
    if config.vocab_size != tokenizer.vocab_size:
        log.info(
            "vocab_size %d → %d to match the tokenizer of %s",
            config.vocab_size,
            tokenizer.vocab_size,
            data,
        )
        config = load_model_config(config, {"vocab_size": tokenizer.vocab_size})
    check_targets(objective, [t.name for t in config.targets], f"model {model}")
    if "position" in config.embedding.parts and seq_length > config.embedding.max_positions:
        raise ConfigError(
            f"the shards' seq_length {seq_length} exceeds the model's "
            f"embedding.max_positions {config.embedding.max_positions}"
        )
    torch.manual_seed(train.seed)
    net = build_model(config)
    net.tokenizer = tokenizer
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "run.json").write_text(
        json.dumps(
            {
                "command": "pretrain",
                "model": str(model),
                "data": str(data),
                "batch_size": batch_size,
                "overrides": overrides or {},
                "objective": objective,
                "seq_length": seq_length,
                "parameters": sum(p.numel() for p in net.parameters()),
            },
            indent=2,
        )
    )
    batches = BatchIterator(
        pretraining_stream(shards, seed=train.seed), batch_size, tokenizer.pad_id
    )
    return Trainer(net, batches, train, out, resume=resume, strategy=strategy).fit()
