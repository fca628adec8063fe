"""Prefix-LM instances (UniLM): a document's opening as a bidirectional prefix, the rest causal.

The rule that cuts a document into instances (a pure function of the document's sentence
lengths, so nothing random and a saved position resumes exactly):

1. Chunks: from the document's start, take whole sentences while they fit in
   ``seq_length - 3`` tokens (room for ``[CLS] prefix [SEP] continuation [EOS]``). A sentence
   longer than that is cut, and its rest starts the next chunk.
2. Prefix: the leading whole sentences of the chunk that hold at most ``PREFIX_SHARE`` of its
   tokens, at least one sentence when the chunk has several; a chunk inside one sentence is cut
   at ``PREFIX_SHARE`` of its tokens (a one-token chunk has an empty prefix).

Every token of every document is thus in exactly one instance, once per epoch.
"""

from __future__ import annotations

import numpy as np

from pretrainkit.data.instances import EpochOrder, ShardStream, check_state
from pretrainkit.data.masking import IGNORE_INDEX
from pretrainkit.data.shards import Shards
from pretrainkit.errors import DataError

PREFIX_SHARE = 0.5
"""The default largest share of a chunk's tokens its prefix takes (``--prefix-share``)."""

Chunk = tuple[int, int, int]  # token offsets: chunk start, prefix end, chunk end


def document_chunks(
    sentence_ends: np.ndarray, start: int, max_tokens: int, share: float = PREFIX_SHARE
) -> list[Chunk]:
    """The chunks of one document (the rule of the module docstring).

    Args:
        sentence_ends: absolute token offsets where the document's sentences end, ascending.
        start: the token offset where the document starts.
        max_tokens: the most tokens of a chunk (prefix and continuation together).
        share: the largest share of a chunk its prefix takes.

    Returns:
        ``(start, cut, stop)`` per chunk: the prefix is ``[start, cut)``, the continuation
        ``[cut, stop)``.
    """
    ends = np.asarray(sentence_ends, dtype=np.int64)
    document_end = int(ends[-1])
    chunks: list[Chunk] = []
    position = start
    while position < document_end:
        # Sentence ends after `position` that still fit: the chunk stops at the last of them.
        first = int(np.searchsorted(ends, position, side="right"))
        last = int(np.searchsorted(ends, position + max_tokens, side="right"))
        if last > first:
            stop = int(ends[last - 1])
            inner = ends[first : last - 1]  # sentence boundaries inside the chunk
        else:  # one sentence longer than a chunk: cut it
            stop = min(position + max_tokens, document_end)
            inner = ends[:0]
        budget = position + int(share * (stop - position))
        if len(inner):
            fitting = inner[inner <= budget]
            cut = int(fitting[-1]) if len(fitting) else int(inner[0])
        else:
            cut = budget
        chunks.append((position, cut, stop))
        position = stop
    return chunks


class PrefixStream(ShardStream):
    """``[CLS] prefix [SEP] continuation [EOS]`` instances with labels on the continuation only.

    Each instance carries ``prefix_lengths`` (a 0-d array: ``[CLS]``, the prefix and ``[SEP]``),
    which the model turns into the prefix-LM attention pattern; ``token_type_ids`` are all 0
    (``[SEP]`` and the pattern mark the boundary, and a model with one segment, RoBERTa, takes
    them as well). Labels are the input ids with the prefix set to -100: the ``lm``
    target shifts them, so ``[SEP]`` predicts the first continuation token and the last one
    predicts ``[EOS]``. Documents are visited in a seeded order per epoch, their chunks in order.
    """

    def __init__(
        self,
        shards: Shards,
        objective: str,
        seq_length: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        share: float = PREFIX_SHARE,
    ):
        self.shards, self.objective = shards, objective
        self.seq_length, self.seed, self.share = seq_length, seed, share
        self.max_tokens = seq_length - 3  # room for [CLS], [SEP] and [EOS]
        if shards.num_documents < world_size:
            raise DataError(
                f"{shards.num_documents} documents cannot be shared by {world_size} processes",
                shards.directory,
            )
        self.order = EpochOrder(shards.num_documents, seed, rank, world_size)
        self.inner = 0  # index of the next chunk within the current document
        self._cache: tuple[int, list[Chunk]] | None = None

    def chunks(self, document: int) -> list[Chunk]:
        """The chunks of ``document`` (cached: consecutive instances come from one document)."""
        if self._cache is None or self._cache[0] != document:
            begin, end = self.shards.document_sentences(document)
            ends = np.asarray(self.shards.sentence_ends[begin:end])
            start = self.shards.sentence_start(begin)
            self._cache = (document, document_chunks(ends, start, self.max_tokens, self.share))
        return self._cache[1]

    def __next__(self) -> dict[str, np.ndarray]:
        _, _, document = self.order.current()
        chunks = self.chunks(document)  # never empty: preprocess keeps no empty document
        start, cut, stop = chunks[self.inner]
        self.inner += 1
        if self.inner == len(chunks):
            self.order.advance()
            self.inner = 0
        tokenizer = self.shards.tokenizer
        tokens = self.shards.read_tokens(start, stop)
        prefix, continuation = tokens[: cut - start], tokens[cut - start :]
        ids = np.concatenate(
            [[tokenizer.cls_id], prefix, [tokenizer.sep_id], continuation, [tokenizer.eos_id]]
        ).astype(np.int64)
        prefix_length = len(prefix) + 2
        labels = ids.copy()
        labels[:prefix_length] = IGNORE_INDEX
        return {
            "input_ids": ids,
            "token_type_ids": np.zeros(len(ids), dtype=np.int64),
            "labels": labels,
            "prefix_lengths": np.asarray(prefix_length, dtype=np.int64),
        }

    def _identity(self) -> dict:
        return {**super()._identity(), "prefix_share": self.share}

    def state_dict(self) -> dict:
        return {**self._identity(), **self.order.state_dict(), "inner": self.inner}

    def load_state_dict(self, state: dict) -> None:
        check_state(state, self._identity())
        self.order.load_state_dict(state)
        self.inner = int(state["inner"])
