"""Sentence embeddings: ``Model.encode`` and the ``embed`` command.

Pooling choices:

- ``cls``: the first token's last-layer vector.
- ``mean`` / ``max``: over the real (non-padding) tokens of the last layer.
- ``first-last-avg``: mean over real tokens of the average of the *first transformer layer's*
  output and the last layer's output (BERT-whitening, Su et al. 2021; SimCSE's corrected
  definition, not the embedding-layer output that some early code used).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from pretrainkit.config.typed import check_choice
from pretrainkit.errors import CheckpointError, ConfigError, DataError
from pretrainkit.fileio import atomic_file, check_output, read_utf8
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


def read_texts(path: str | Path) -> list[str]:
    """Texts to embed: one per line, or the ``text_a`` column of a ``.tsv`` task file.

    A ``.tsv`` file is a task file as ``finetune`` and ``predict`` read it (header with
    ``text_a`` and optionally ``label`` / ``text_b``).

    Every line is kept (an empty line is an empty text), so row i of the output is line i of
    the input (line i + 1 for a TSV, after its header).
    """
    path = Path(path)
    if path.suffix == ".tsv":
        from pretrainkit.tasks.classification import read_classification_tsv

        return read_classification_tsv(path, require_labels=False).texts_a
    text = read_utf8(path)
    lines = text.split("\n")  # not splitlines(): U+2028 and friends are part of a text
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise DataError("file is empty; expected one text per line", path)
    return [line.rstrip("\r") for line in lines]


def embed(
    model_dir: str | Path,
    data_file: str | Path,
    out_file: str | Path,
    pooling: str | None = None,
    normalize: bool | None = None,
    batch_size: int = 32,
    max_length: int | None = None,
    overwrite: bool = False,
) -> dict:
    """Embed every text of ``data_file`` and write a ``[rows, hidden]`` float32 ``.npy``.

    The output appears whole or not at all (written beside, then renamed); an existing
    ``out_file`` is replaced only with ``overwrite``.
    """
    from pretrainkit.model import load

    check_output(out_file, overwrite, folder=False)  # before the work, not after it
    model = load(model_dir)
    texts = read_texts(data_file)
    vectors = encode(model, texts, batch_size, pooling, normalize, max_length)
    with atomic_file(out_file, overwrite) as tmp, tmp.open("wb") as f:
        np.save(f, vectors)  # to a file object: np.save would otherwise append ".npy"
    return {"out": str(out_file), "rows": len(texts), "dim": int(vectors.shape[1])}
