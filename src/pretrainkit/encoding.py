"""Sentence embeddings of a model (``Model.encode``): tokenize, run the encoder, pool, and
optionally normalise, in eval mode without gradients."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from pretrainkit.config.typed import check_choice
from pretrainkit.errors import CheckpointError, ConfigError
from pretrainkit.targets.classification import pool

if TYPE_CHECKING:
    from pretrainkit.model import Model

POOLINGS = ("cls", "mean", "max", "first-last-avg")


def capacity(model: Model) -> int | None:
    """Longest input the position table can take, or None when positions are not learned."""
    emb = model.config.embedding
    if "position" not in emb.parts:
        return None
    return emb.max_positions - emb.position_offset


@torch.no_grad()
def encode(
    model: Model,
    texts: Sequence[str],
    batch_size: int = 32,
    pooling: str | None = None,
    normalize: bool | None = None,
    max_length: int | None = None,
) -> np.ndarray:
    """Embed ``texts`` with ``model``; see ``Model.encode`` for the options."""
    if model.tokenizer is None:
        raise CheckpointError("encode: the model has no tokenizer")
    if isinstance(texts, str):
        raise ConfigError("encode: expected a list of texts, got one string")
    defaults = model.encode_defaults
    pooling = pooling or defaults.get("pooling", "mean")
    check_choice(pooling, POOLINGS, "pooling")
    normalize = defaults.get("normalize", False) if normalize is None else normalize
    limit = capacity(model)
    max_length = max_length or defaults.get("max_length") or limit
    if limit is not None and max_length is not None and max_length > limit:
        raise ConfigError(f"max_length {max_length} exceeds the model's {limit} positions")
    if batch_size < 1:
        raise ConfigError(f"batch_size: {batch_size} must be at least 1")
    tokenizer = model.tokenizer
    rows = [
        tokenizer.build_inputs(ids, max_length=max_length)[0]
        for ids in tokenizer.encode_batch(list(texts))
    ]
    # Longest first, as sentence-transformers does: batches of similar lengths pad little.
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = np.zeros((len(rows), model.config.hidden_size), dtype=np.float32)
    try:
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            width = max(len(rows[i]) for i in chosen)
            ids = torch.full((len(chosen), width), tokenizer.pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, i in enumerate(chosen):
                ids[row, : len(rows[i])] = torch.tensor(rows[i])
                mask[row, : len(rows[i])] = 1
            ids, mask = ids.to(device), mask.to(device)
            vectors = _pooled(model, ids, mask, pooling).float()  # [b, h]
            if normalize:
                vectors = torch.nn.functional.normalize(vectors, dim=-1)
            out[chosen] = vectors.cpu().numpy()
    finally:
        model.train(was_training)
    return out


def _pooled(model: Model, ids: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    if pooling == "first-last-avg":
        layers = model.layer_outputs(ids, attention_mask=mask)
        # Mean pooling is linear, so pooling the average equals averaging the pooled layers.
        return pool((layers[0] + layers[-1]) / 2, mask, "mean")
    # The encoder's output, for encoder-decoders too (T5 sentence embeddings read it).
    hidden = model.encoder_states(ids, attention_mask=mask)  # [b, s, h]
    return pool(hidden, mask, "first" if pooling == "cls" else pooling)
