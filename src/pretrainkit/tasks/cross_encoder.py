"""``cross_encoder``: are two texts similar under each of several perspectives? (one sequence)

Files: MPTS or plain pair TSV (``tasks.mpts_format``). A pair is one sequence
``[CLS] a [SEP] b [SEP]``, pooled, with one sigmoid per perspective and binary cross-entropy:
the ``multi_label`` head with the perspectives as its labels. Both texts attend to each other,
which usually beats the bi-encoder (``siamese``) at the price of encoding every pair anew.
When a pair is longer than ``seq_length`` the longer text is cut first, so that both keep as
much as they can. Metrics and the prediction file are ``PerspectiveTask``'s.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from pretrainkit.config import TargetConfig
from pretrainkit.data.batching import collate
from pretrainkit.errors import ConfigError
from pretrainkit.tasks.base import TASKS
from pretrainkit.tasks.mpts_format import PairData, PairStream, PerspectiveTask
from pretrainkit.tokenization import Tokenizer


def pair_inputs(
    tokenizer: Tokenizer, a: list[int], b: list[int], seq_length: int
) -> dict[str, np.ndarray]:
    """``[CLS] a [SEP] b [SEP]``, the longer text cut first until the pair fits."""
    room = max(0, seq_length - tokenizer.template.num_special(True))
    if len(a) + len(b) > room:
        # The shorter text stays whole if it fits in half the room; the longer takes the rest.
        short = min(min(len(a), len(b)), room // 2)
        if len(a) <= len(b):
            a, b = a[:short], b[: room - short]
        else:
            a, b = a[: room - short], b[:short]
    input_ids, token_types = tokenizer.build_inputs(a, b, seq_length)
    return {
        "input_ids": np.asarray(input_ids, dtype=np.int64),
        "token_type_ids": np.asarray(token_types, dtype=np.int64),
    }


@TASKS.register("cross_encoder")
class CrossEncoder(PerspectiveTask):
    """MPTS or pair TSV; ``[CLS] a [SEP] b [SEP]`` → pooled → one sigmoid per perspective;
    per-perspective accuracy, F1, AUC (weighted F1 first); the prediction file holds
    ``id<TAB><probability per perspective>``."""

    name = "cross_encoder"

    def stream(
        self, data: PairData, tokenizer: Tokenizer, seed: int, rank: int, world_size: int
    ) -> PairStream:
        self.perspectives()
        length = self.options.seq_length
        return PairStream(
            data,
            tokenizer,
            lambda a, b: pair_inputs(tokenizer, a, b, length),
            seed,
            rank,
            world_size,
        )

    def collate(self, instances: list[dict[str, np.ndarray]], pad_id: int) -> dict[str, Any]:
        """Pads the inputs and stacks the pairs' 0/1 labels into ``[b, P]`` floats (the default
        collation would pad them to the input length like token labels)."""
        labels = torch.from_numpy(np.stack([instance["labels"] for instance in instances]))
        rest = [{k: v for k, v in instance.items() if k != "labels"} for instance in instances]
        return collate(rest, pad_id) | {"labels": labels}

    def batches(self, data: PairData, tokenizer: Tokenizer, batch_size: int) -> Iterator[dict]:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        for start in range(0, len(data), batch_size):
            stop = min(start + batch_size, len(data))
            ids_a = tokenizer.encode_batch(data.texts_a[start:stop])
            ids_b = tokenizer.encode_batch(data.texts_b[start:stop])
            length = self.options.seq_length
            yield collate(
                [pair_inputs(tokenizer, a, b, length) for a, b in zip(ids_a, ids_b)],
                tokenizer.pad_id,
            )

    def target(self) -> TargetConfig:
        options = {"labels": self.perspectives(), "pooling": self.options.pooling}
        return TargetConfig("multi_label", {**options, "dropout": self.options.dropout})
