"""``siamese``: are two texts similar under each of several perspectives? (bi-encoder)

Files: MPTS or plain pair TSV (``tasks.mpts_format``). Each text is encoded on its own as
``[CLS] text [SEP]`` by the shared encoder, mean-pooled, and projected once per perspective;
the score of a perspective is the cosine of the two projections over a temperature, through a
sigmoid (``targets.siamese``). Metrics and the prediction file are ``PerspectiveTask``'s.

A row of the data is a pair, and so is an instance of the training stream (its two texts as
``[2, s]`` arrays). ``Siamese.collate`` flattens ``b`` pairs into the ``[2b, s]`` inputs the
model takes, a pair's texts in consecutive rows, so ``--batch-size``, ``--epochs`` and
``--folds`` count pairs. Evaluation batches have the same layout; their ``batch_size`` counts
pairs too.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pretrainkit.config import TargetConfig
from pretrainkit.data.batching import collate
from pretrainkit.errors import ConfigError
from pretrainkit.tasks.base import TASKS
from pretrainkit.tasks.mpts_format import PairData, PairStream, PerspectiveOptions, PerspectiveTask
from pretrainkit.tokenization import Tokenizer


@dataclass
class SiameseOptions(PerspectiveOptions):
    temperature: float = 0.5
    """The cosine of a pair's projections is divided by it before the sigmoid (siamese)."""
    projection_size: int = 128
    """Width of each perspective's projection of a pooled text (siamese)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)):
            raise ConfigError(f"temperature must be a number > 0, got {self.temperature!r}")
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature!r}")
        if not isinstance(self.projection_size, int) or self.projection_size < 1:
            raise ConfigError(
                f"projection_size must be a positive integer, got {self.projection_size!r}"
            )


def _single(tokenizer: Tokenizer, ids: list[int], seq_length: int) -> dict[str, np.ndarray]:
    # Cut before wrapping: build_inputs only checks that the special tokens fit.
    room = max(0, seq_length - tokenizer.template.num_special(False))
    input_ids, token_types = tokenizer.build_inputs(ids[:room], None, seq_length)
    return {
        "input_ids": np.asarray(input_ids, dtype=np.int64),
        "token_type_ids": np.asarray(token_types, dtype=np.int64),
    }


def collate_pairs(instances: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Pairs → ``input_ids``, ``token_type_ids``, ``attention_mask`` ``[2b, s]`` (pair ``i`` in
    rows ``2i`` and ``2i + 1``) and ``labels`` ``[b, P]`` floats."""
    if not instances:
        raise ValueError("cannot collate an empty list of pairs")
    sequences = [
        {"input_ids": pair[f"input_ids_{side}"], "token_type_ids": pair[f"token_type_ids_{side}"]}
        for pair in instances
        for side in "ab"
    ]
    batch = collate(sequences, pad_id)
    if "labels" in instances[0]:
        batch["labels"] = torch.from_numpy(np.stack([pair["labels"] for pair in instances]))
    return batch


@TASKS.register("siamese")
class Siamese(PerspectiveTask):
    """MPTS or pair TSV; a bi-encoder scores each perspective by the cosine of its two
    projections; per-perspective accuracy, F1, AUC (weighted F1 first); the prediction file
    holds ``id<TAB><probability per perspective>``."""

    name = "siamese"
    options_class = SiameseOptions

    def _encode(self, tokenizer: Tokenizer) -> Any:
        length = self.options.seq_length

        def encode(a: list[int], b: list[int]) -> dict[str, np.ndarray]:
            first, second = _single(tokenizer, a, length), _single(tokenizer, b, length)
            return {f"{key}_a": value for key, value in first.items()} | {
                f"{key}_b": value for key, value in second.items()
            }

        return encode

    def stream(
        self, data: PairData, tokenizer: Tokenizer, seed: int, rank: int, world_size: int
    ) -> PairStream:
        self.perspectives()
        return PairStream(data, tokenizer, self._encode(tokenizer), seed, rank, world_size)

    def collate(self, instances: list[dict[str, np.ndarray]], pad_id: int) -> dict[str, Any]:
        """A batch of pairs flattened for the model (``collate_pairs``)."""
        return collate_pairs(instances, pad_id)

    def batches(self, data: PairData, tokenizer: Tokenizer, batch_size: int) -> Iterator[dict]:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        encode = self._encode(tokenizer)
        for start in range(0, len(data), batch_size):
            stop = min(start + batch_size, len(data))
            ids_a = tokenizer.encode_batch(data.texts_a[start:stop])
            ids_b = tokenizer.encode_batch(data.texts_b[start:stop])
            pairs = [encode(a, b) for a, b in zip(ids_a, ids_b)]
            yield collate_pairs(pairs, tokenizer.pad_id)

    def target(self) -> TargetConfig:
        options = self.options
        return TargetConfig(
            "siamese",
            {
                "labels": self.perspectives(),
                "pooling": options.pooling,
                "temperature": options.temperature,
                "projection_size": options.projection_size,
                "dropout": options.dropout,
            },
        )
