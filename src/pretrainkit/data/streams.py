"""Pre-training instance streams over shards: fixed windows (mlm, lm) and sentence pairs."""

from __future__ import annotations

import bisect

import numpy as np

from pretrainkit.data.instances import EpochOrder, InstanceStream, ShardStream, check_state
from pretrainkit.data.masking import mask_tokens
from pretrainkit.data.objectives import get_objective
from pretrainkit.data.shards import Shards
from pretrainkit.errors import DataError

__all__ = ["InstanceStream", "WindowStream", "pretraining_stream"]


def pretraining_stream(
    shards: Shards,
    objective: str | None = None,
    seq_length: int | None = None,
    seed: int = 0,
    mask_prob: float = 0.15,
    rank: int = 0,
    world_size: int = 1,
    options: dict | None = None,
) -> InstanceStream:
    """The endless, seeded instance stream for a pre-training objective.

    Args:
        shards: an opened shard folder.
        objective: a registered objective name; default: the one given to preprocess.
        seq_length: instance length; default: the one given to preprocess.
        seed: fixes the per-epoch order, the masking and (bert/albert) the pairing.
        mask_prob: fraction of ordinary tokens chosen for MLM.
        rank: this process's index when several share the data.
        world_size: how many processes share the data; each gets disjoint instances.
        options: objective options (``Objective.options_class`` fields) on top of those the
            shard manifest records for its objective.

    Raises:
        ConfigError: unknown objective, bad length, or masking with a mask-less tokenizer.
        DataError: the corpus is too small for a single instance.
    """
    name = objective or shards.manifest["objective"]
    recorded = shards.manifest.get("objective_options", {})
    if name != shards.manifest["objective"]:
        recorded = {}  # the manifest's options are those of another objective
    spec = get_objective(name).configured({**recorded, **(options or {})})
    seq_length = seq_length or int(shards.manifest["seq_length"])
    spec.check(seq_length, shards.tokenizer)
    return spec.stream(shards, seq_length, seed, mask_prob, rank, world_size)


class _DocumentEnds:
    """Lazy sequence: end position of each document in the stream with a separator after each.

    Document d ends (separator included) at token_end(d) + d + 1. Computed per access from the
    memory-mapped indexes so that nothing of O(#documents) is held in memory.
    """

    def __init__(self, shards: Shards):
        self._sentence_ends = shards.sentence_ends
        self._document_ends = shards.document_ends

    def __len__(self) -> int:
        return len(self._document_ends)

    def __getitem__(self, d: int) -> int:
        return int(self._sentence_ends[self._document_ends[d] - 1]) + d + 1


class WindowStream(ShardStream):
    """Full windows cut from the token stream, a separator after every document.

    `mlm`: windows of seq_length - 2 tokens wrapped in [CLS] ... [SEP], separator sep_id,
    dynamically masked. `lm`: windows of seq_length tokens, separator eos_id, labels = inputs.
    The last partial window of the stream is dropped.
    """

    def __init__(
        self,
        shards: Shards,
        objective: str,
        seq_length: int,
        seed: int = 0,
        mask_prob: float = 0.15,
        rank: int = 0,
        world_size: int = 1,
    ):
        tokenizer = shards.tokenizer
        self.shards, self.objective, self.seq_length = shards, objective, seq_length
        self.seed, self.mask_prob = seed, mask_prob
        self.width = seq_length - 2 if objective == "mlm" else seq_length
        self.separator = tokenizer.sep_id if objective == "mlm" else tokenizer.eos_id
        self._ends = _DocumentEnds(shards)
        self._special = np.asarray(tokenizer.special_ids, dtype=np.int64)
        stream_length = shards.num_tokens + shards.num_documents
        num_windows = stream_length // self.width
        if num_windows < world_size:
            raise DataError(
                f"the corpus has {stream_length} tokens (separators included), too few for "
                f"{world_size} window(s) of {self.width}; use more text or a shorter seq_length",
                shards.directory,
            )
        self.order = EpochOrder(num_windows, seed, rank, world_size)

    def window(self, index: int) -> np.ndarray:
        """Window `index` of the stream: `[width]` int64 ids, separators included."""
        start, stop = index * self.width, (index + 1) * self.width
        # Separators before a stream position = documents that end at or before it.
        first_doc = bisect.bisect_right(self._ends, start)
        end_doc = bisect.bisect_right(self._ends, stop)
        tokens = self.shards.read_tokens(start - first_doc, stop - end_doc)
        if end_doc == first_doc:
            return tokens
        is_separator = np.zeros(self.width, dtype=bool)
        is_separator[[self._ends[d] - 1 - start for d in range(first_doc, end_doc)]] = True
        window = np.empty(self.width, dtype=np.int64)
        window[is_separator] = self.separator
        window[~is_separator] = tokens
        return window

    def __next__(self) -> dict[str, np.ndarray]:
        epoch, slot, index = self.order.current()
        self.order.advance()
        window = self.window(index)
        types = np.zeros(self.seq_length, dtype=np.int64)
        if self.objective == "lm":
            return {"input_ids": window, "token_type_ids": types, "labels": window.copy()}
        tokenizer = self.shards.tokenizer
        ids = np.concatenate([[tokenizer.cls_id], window, [tokenizer.sep_id]]).astype(np.int64)
        rng = np.random.default_rng([self.seed, epoch, slot])
        assert tokenizer.mask_id is not None  # checked by check_objective
        ids, labels = mask_tokens(
            ids, rng, tokenizer.mask_id, tokenizer.vocab_size, self._special, self.mask_prob
        )
        return {"input_ids": ids, "token_type_ids": types, "labels": labels}

    def state_dict(self) -> dict:
        return {**self._identity(), **self.order.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        check_state(state, self._identity())
        self.order.load_state_dict(state)
