"""Sequence-to-sequence instance streams (t5, bart, gsg, mt) and their collate.

An instance is ``{"input_ids": [s], "labels": [t]}``: the encoder's source and the decoder's
target sequence (the model shifts the target right into the decoder's inputs). Every instance
is a pure function of (seed, epoch, position), so a saved position resumes exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from pretrainkit.data.instances import EpochOrder, ShardStream, check_state
from pretrainkit.data.masking import IGNORE_INDEX
from pretrainkit.data.shards import Shards
from pretrainkit.data.streams import WindowStream
from pretrainkit.errors import DataError

Instance = dict[str, np.ndarray]
BlockNoiser = Callable[[list[np.ndarray], np.random.Generator], Instance]


def seq2seq_collate(instances: list[Instance], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad the encoder and decoder sides separately, each to its own longest sequence.

    Returns:
        ``input_ids`` / ``attention_mask`` ``[b, s]`` and ``labels`` (padded with -100) /
        ``decoder_attention_mask`` ``[b, t]``, int64.
    """
    if not instances:
        raise ValueError("cannot collate an empty list of instances")
    batch: dict[str, torch.Tensor] = {}
    for key, mask_key, fill in (
        ("input_ids", "attention_mask", pad_id),
        ("labels", "decoder_attention_mask", IGNORE_INDEX),
    ):
        lengths = np.asarray([len(inst[key]) for inst in instances])
        padded = np.full((len(instances), int(lengths.max())), fill, dtype=np.int64)  # [b, s]
        for row, inst in enumerate(instances):
            padded[row, : lengths[row]] = inst[key]
        mask = np.arange(padded.shape[1])[None, :] < lengths[:, None]  # [b, s]
        batch[key] = torch.from_numpy(padded)
        batch[mask_key] = torch.from_numpy(mask.astype(np.int64))
    return batch


class SpanCorruptionStream(WindowStream):
    """T5: windows of the token stream (an end-of-text token between documents), each
    span-corrupted into a source of at most ``seq_length`` tokens and its target."""

    def __init__(
        self,
        shards: Shards,
        objective: str,
        seq_length: int,
        raw_length: int,
        noise: Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]],
        options: dict[str, Any],
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        super().__init__(shards, objective, raw_length, seed, 0.0, rank, world_size)
        # WindowStream cut raw_length-token windows; the instances are seq_length long.
        self.seq_length, self.raw_length = seq_length, raw_length
        self.noise, self.options = noise, options

    def __next__(self) -> Instance:
        epoch, slot, index = self.order.current()
        self.order.advance()
        rng = np.random.default_rng([self.seed, epoch, slot])
        source, target = self.noise(self.window(index), rng)
        return {"input_ids": source, "labels": target}

    def _identity(self) -> dict:
        return {**super()._identity(), "options": self.options}


class SentenceBlockStream(ShardStream):
    """bart, gsg: each document cut into blocks of whole sentences of at most ``max_tokens``
    tokens (a longer sentence is cut into pieces), each block noised by ``noiser``.

    Documents are visited in a seeded order per epoch, their blocks in order.
    """

    def __init__(
        self,
        shards: Shards,
        objective: str,
        seq_length: int,
        max_tokens: int,
        noiser: BlockNoiser,
        options: dict[str, Any],
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.shards, self.objective, self.seq_length = shards, objective, seq_length
        self.max_tokens, self.noiser, self.options, self.seed = max_tokens, noiser, options, seed
        if shards.num_documents < world_size:
            raise DataError(
                f"{shards.num_documents} documents cannot be shared by {world_size} processes",
                shards.directory,
            )
        self.order = EpochOrder(shards.num_documents, seed, rank, world_size)
        self.inner = 0  # index of the next block within the current document
        self._cache: tuple[int, list[list[np.ndarray]]] | None = None

    def __next__(self) -> Instance:
        epoch, _, document = self.order.current()
        blocks = self.blocks(document)
        if self.inner >= len(blocks):  # every document has at least one block
            self.order.advance()
            self.inner = 0
            epoch, _, document = self.order.current()
            blocks = self.blocks(document)
        rng = np.random.default_rng([self.seed, epoch, document, self.inner])
        block = blocks[self.inner]
        self.inner += 1
        return self.noiser(block, rng)

    def blocks(self, document: int) -> list[list[np.ndarray]]:
        """The blocks of a document: lists of sentence token arrays."""
        if self._cache is not None and self._cache[0] == document:
            return self._cache[1]
        begin, end = self.shards.document_sentences(document)
        start = self.shards.sentence_start(begin)
        bounds = np.asarray(self.shards.sentence_ends[begin:end], dtype=np.int64) - start
        tokens = self.shards.read_tokens(start, start + int(bounds[-1]))
        blocks: list[list[np.ndarray]] = []
        block: list[np.ndarray] = []
        length = 0
        for sentence in np.split(tokens, bounds[:-1]):
            for piece_start in range(0, len(sentence), self.max_tokens):
                piece = sentence[piece_start : piece_start + self.max_tokens]
                if block and length + len(piece) > self.max_tokens:
                    blocks.append(block)
                    block, length = [], 0
                block.append(piece)
                length += len(piece)
        blocks.append(block)
        self._cache = (document, blocks)
        return blocks

    def _identity(self) -> dict:
        return {**super()._identity(), "options": self.options}

    def state_dict(self) -> dict:
        return {**self._identity(), **self.order.state_dict(), "inner": self.inner}

    def load_state_dict(self, state: dict) -> None:
        check_state(state, self._identity())
        self.order.load_state_dict(state)
        self.inner = int(state["inner"])


class ParallelTextStream(ShardStream):
    """mt: each document is one (source, target) pair of pieces, each cut to
    ``seq_length - 1`` tokens and closed with the end-of-text token."""

    def __init__(
        self,
        shards: Shards,
        objective: str,
        seq_length: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.shards, self.objective, self.seq_length, self.seed = (
            shards,
            objective,
            seq_length,
            seed,
        )
        if shards.num_documents < world_size:
            raise DataError(
                f"{shards.num_documents} sentence pairs cannot be shared by {world_size} processes",
                shards.directory,
            )
        self.order = EpochOrder(shards.num_documents, seed, rank, world_size)

    def __next__(self) -> Instance:
        # preprocess drops a piece that tokenizes to nothing; such a pair is skipped here.
        for _ in range(self.order.slots + 1):
            _, _, document = self.order.current()
            self.order.advance()
            begin, end = self.shards.document_sentences(document)
            if end - begin == 2:
                return {
                    "input_ids": self._piece(begin),
                    "labels": self._piece(begin + 1),
                }
        raise DataError(
            "no sentence pair has tokens on both sides; check the tokenizer and the corpus",
            self.shards.directory,
        )

    def _piece(self, sentence: int) -> np.ndarray:
        start = self.shards.sentence_start(sentence)
        stop = min(int(self.shards.sentence_ends[sentence]), start + self.seq_length - 1)
        eos = [self.shards.tokenizer.eos_id]
        return np.concatenate([self.shards.read_tokens(start, stop), eos]).astype(np.int64)

    def state_dict(self) -> dict:
        return {**self._identity(), **self.order.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        check_state(state, self._identity())
        self.order.load_state_dict(state)
