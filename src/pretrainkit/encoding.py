"""Sentence embeddings of a model (``Model.encode``): tokenize, run the encoder, pool, whiten
when the model folder holds a whitening, and optionally normalise, in eval mode without
gradients."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from pretrainkit.config.typed import check_choice
from pretrainkit.errors import CheckpointError, ConfigError
from pretrainkit.targets.classification import pool

if TYPE_CHECKING:
    from pretrainkit.model import Model
    from pretrainkit.whitening import Whitening

POOLINGS = ("cls", "mean", "max", "first-last-avg")
PRECISIONS = ("fp32", "bf16", "fp16")


def capacity(model: Model) -> int | None:
    """Longest input the position table can take, or None when positions are not learned."""
    emb = model.config.embedding
    if "position" not in emb.parts:
        return None
    return emb.max_positions - emb.position_offset


def resolve_options(
    model: Model,
    pooling: str | None = None,
    normalize: bool | None = None,
    max_length: int | None = None,
    whiten: bool = True,
) -> tuple[str, bool, int | None]:
    """The ``(pooling, normalize, max_length)`` that ``encode`` uses for these arguments.

    Options left as None: the pooling a folder's whitening was fitted for (when it applies),
    else the model's ``encode_defaults``, else mean pooling, no normalisation and the position
    table's capacity.
    """
    defaults = model.encode_defaults
    whitening = model.whitening if whiten else None
    fitted = whitening.pooling if whitening is not None else None
    pooling = pooling or fitted or defaults.get("pooling", "mean")
    check_choice(pooling, POOLINGS, "pooling")
    normalize = defaults.get("normalize", False) if normalize is None else normalize
    limit = capacity(model)
    max_length = max_length or defaults.get("max_length") or limit
    if limit is not None and max_length is not None and max_length > limit:
        raise ConfigError(f"max_length {max_length} exceeds the model's {limit} positions")
    return pooling, bool(normalize), max_length


def precision_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast for ``precision`` on ``device`` (nothing for fp32); fp16 only on a GPU."""
    check_choice(precision, PRECISIONS, "precision")
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type == "cpu":
        raise ConfigError(
            "precision: fp16 is not supported on CPU (slow, and LayerNorm / softmax overflow "
            "there); use bf16 or fp32"
        )
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


@torch.no_grad()
def encode(
    model: Model,
    texts: Sequence[str],
    batch_size: int = 32,
    pooling: str | None = None,
    normalize: bool | None = None,
    max_length: int | None = None,
    precision: str = "fp32",
    whiten: bool = True,
) -> np.ndarray:
    """Embed ``texts`` with ``model``; see ``Model.encode`` for the options."""
    if model.tokenizer is None:
        raise CheckpointError("encode: the model has no tokenizer")
    if isinstance(texts, str):
        raise ConfigError("encode: expected a list of texts, got one string")
    pooling, normalize, max_length = resolve_options(model, pooling, normalize, max_length, whiten)
    whitening = model.whitening if whiten else None
    if whitening is not None and whitening.pooling != pooling:
        raise ConfigError(
            f"pooling: the model's whitening was fitted on {whitening.pooling!r} vectors, not "
            f"{pooling!r}; choose pooling {whitening.pooling!r} or encode without whitening"
        )
    if batch_size < 1:
        raise ConfigError(f"batch_size: {batch_size} must be at least 1")
    device = next(model.parameters()).device
    autocast = precision_context(precision, device)
    tokenizer = model.tokenizer
    rows = [
        tokenizer.build_inputs(ids, max_length=max_length)[0]
        for ids in tokenizer.encode_batch(list(texts))
    ]
    # Longest first, as sentence-transformers does: batches of similar lengths pad little, and
    # a batch is only as wide as its own longest row.
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    width_out = whitening.k if whitening is not None else model.config.hidden_size
    out = np.zeros((len(rows), width_out), dtype=np.float32)
    was_training = model.training
    model.eval()
    try:
        with autocast:
            for start in range(0, len(order), batch_size):
                chosen = order[start : start + batch_size]
                ids, mask = _padded([rows[i] for i in chosen], tokenizer.pad_id)
                vectors = _pooled(model, ids.to(device), mask.to(device), pooling)
                out[chosen] = finish_vectors(vectors.float(), whitening, normalize).cpu().numpy()
    finally:
        model.train(was_training)
    return out


def _padded(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids ``[b, s]`` padded to the longest row, and the mask of real tokens ``[b, s]``."""
    lengths = np.array([len(row) for row in rows])
    ids = np.full((len(rows), int(lengths.max())), pad_id, dtype=np.int64)
    mask = np.arange(ids.shape[1])[None, :] < lengths[:, None]
    ids[mask] = np.concatenate([np.asarray(row, dtype=np.int64) for row in rows])
    return torch.from_numpy(ids), torch.from_numpy(mask.astype(np.int64))


def finish_vectors(
    vectors: torch.Tensor, whitening: Whitening | None, normalize: bool
) -> torch.Tensor:
    """Pooled float32 vectors ``[b, h]`` → what ``encode`` returns: whitened, then normalised."""
    # Whitening first: normalising before it would undo its scaling of each direction.
    if whitening is not None:
        vectors = whitening.apply_tensor(vectors).float()  # [b, k]
    if normalize:
        vectors = torch.nn.functional.normalize(vectors, dim=-1)
    return vectors


def _pooled(model: Model, ids: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    if pooling == "first-last-avg":
        layers = model.layer_outputs(ids, attention_mask=mask)
        # Mean pooling is linear, so pooling the average equals averaging the pooled layers.
        return pool((layers[0] + layers[-1]) / 2, mask, "mean")
    # The encoder's output, for encoder-decoders too (T5 sentence embeddings read it).
    hidden = model.encoder_states(ids, attention_mask=mask)  # [b, s, h]
    return pool(hidden, mask, "first" if pooling == "cls" else pooling)
