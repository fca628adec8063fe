"""Sentence-pair instances for BERT (next sentence prediction) and ALBERT (sentence order).

Pairs are built per document, as in the original BERT data pipeline, from a generator seeded
with (seed, epoch, document); a document's pairs can therefore be rebuilt at any time, which
makes resuming in the middle of a document exact.
"""

from __future__ import annotations

import numpy as np

from pretrainkit.data.instances import EpochOrder, ShardStream, check_state
from pretrainkit.data.masking import mask_tokens
from pretrainkit.data.shards import Shards
from pretrainkit.errors import DataError
from pretrainkit.tokenization.base import truncated_lengths

Pair = tuple[np.ndarray, np.ndarray, int]  # (segment a, segment b, pair label)


class PairStream(ShardStream):
    """`[CLS] a [SEP] b [SEP]` instances with MLM labels and `pair_labels`.

    bert: b follows a (label 0) or, half of the time, comes from another document (label 1).
    albert: b is the chunk that follows a; half of the pairs are swapped (label 1).
    Each pair fills up to seq_length; with probability `short_seq_prob` its target is shorter.
    Documents are visited in a seeded order per epoch, their pairs in document order.
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
        short_seq_prob: float = 0.1,
    ):
        self.shards, self.objective, self.seq_length = shards, objective, seq_length
        self.seed, self.mask_prob, self.short_seq_prob = seed, mask_prob, short_seq_prob
        self.max_tokens = seq_length - 3  # room for [CLS] and two [SEP]
        self._special = np.asarray(shards.tokenizer.special_ids, dtype=np.int64)
        if shards.num_documents < world_size:
            raise DataError(
                f"{shards.num_documents} documents cannot be shared by {world_size} processes",
                shards.directory,
            )
        self.order = EpochOrder(shards.num_documents, seed, rank, world_size)
        self.inner = 0  # index of the next pair within the current document
        self._cache: tuple[int, int, list[Pair]] | None = None

    def __next__(self) -> dict[str, np.ndarray]:
        empty_in_a_row = 0
        while True:
            epoch, _, document = self.order.current()
            pairs = self._document_pairs(epoch, document)
            if self.inner < len(pairs):
                break
            self.order.advance()
            self.inner = 0
            empty_in_a_row += 1
            if empty_in_a_row > self.order.slots:
                raise DataError(
                    "no document yields a sentence pair; the corpus needs documents with at "
                    "least two tokens",
                    self.shards.directory,
                )
        a, b, label = pairs[self.inner]
        rng = np.random.default_rng([self.seed, epoch, document, self.inner])
        self.inner += 1
        tokenizer = self.shards.tokenizer
        cls, sep = [tokenizer.cls_id], [tokenizer.sep_id]
        ids = np.concatenate([cls, a, sep, b, sep]).astype(np.int64)
        types = np.zeros(len(ids), dtype=np.int64)
        types[len(a) + 2 :] = 1
        assert tokenizer.mask_id is not None  # checked by check_objective
        ids, labels = mask_tokens(
            ids, rng, tokenizer.mask_id, tokenizer.vocab_size, self._special, self.mask_prob
        )
        return {
            "input_ids": ids,
            "token_type_ids": types,
            "labels": labels,
            "pair_labels": np.asarray(label, dtype=np.int64),
        }

    def _document_pairs(self, epoch: int, document: int) -> list[Pair]:
        if self._cache is None or self._cache[:2] != (epoch, document):
            rng = np.random.default_rng([self.seed, epoch, document])
            self._cache = (epoch, document, self.build_pairs(document, rng))
        return self._cache[2]

    def _sentences(self, document: int, first: int | None = None, min_tokens: int | None = None):
        """Token arrays of a document's sentences, from `first` on; with `min_tokens`, only
        as many sentences as reach that many tokens (so a long document is not read whole)."""
        begin, end = self.shards.document_sentences(document)
        begin = begin if first is None else first
        start = self.shards.sentence_start(begin)
        ends = self.shards.sentence_ends
        if min_tokens is not None:
            last = int(np.searchsorted(ends[begin:end], start + min_tokens)) + begin
            end = min(end, last + 1)
        bounds = np.asarray(ends[begin:end], dtype=np.int64) - start
        tokens = self.shards.read_tokens(start, start + int(bounds[-1]))
        return np.split(tokens, bounds[:-1])

    def build_pairs(self, document: int, rng: np.random.Generator) -> list[Pair]:
        """All pairs of one document, in order (a pure function of `document` and `rng`)."""
        sentences = self._sentences(document)
        pairs: list[Pair] = []
        chunk: list[np.ndarray] = []
        length = 0
        target = self._target_length(rng)
        i = 0
        while i < len(sentences):
            chunk.append(sentences[i])
            length += len(sentences[i])
            if i == len(sentences) - 1 or length >= target:
                a_end = int(rng.integers(1, len(chunk))) if len(chunk) >= 2 else 1
                pair, unused = self._make_pair(chunk, a_end, target, document, rng)
                i -= unused  # BERT puts the sentences it did not use back for the next pair
                if pair is not None:
                    pairs.append(pair)
                chunk, length = [], 0
                target = self._target_length(rng)
            i += 1
        return pairs

    def _target_length(self, rng: np.random.Generator) -> int:
        if rng.random() < self.short_seq_prob:
            return int(rng.integers(2, self.max_tokens + 1))
        return self.max_tokens

    def _make_pair(
        self,
        chunk: list[np.ndarray],
        a_end: int,
        target: int,
        document: int,
        rng: np.random.Generator,
    ) -> tuple[Pair | None, int]:
        """A pair from a chunk, and how many of the chunk's sentences it left unused."""
        if len(chunk) > 1:
            a, following = np.concatenate(chunk[:a_end]), np.concatenate(chunk[a_end:])
        elif len(chunk[0]) > 1:
            # A lone sentence is cut in two, so that it too can give an in-order pair; without
            # this, short documents would push the share of random/swapped pairs above half.
            cut = int(rng.integers(1, len(chunk[0])))
            a, following = chunk[0][:cut], chunk[0][cut:]
        elif self.objective == "bert":
            a, following = chunk[0], None
        else:
            return None, 0  # one token has no order to predict
        unused = 0
        if self.objective == "bert":
            if following is None or rng.random() < 0.5:
                label = 1
                b = self._random_segment(document, max(1, target - len(a)), rng)
                unused = len(chunk) - a_end if len(chunk) > 1 else 0
            else:
                label, b = 0, following
        else:
            assert following is not None  # only bert keeps a lone one-token sentence
            label, b = int(rng.random() < 0.5), following
            if label:
                a, b = b, a
        a, b = self._truncate(a, b, rng)
        if len(a) == 0 or len(b) == 0:
            return None, unused
        return (a, b, label), unused

    def _random_segment(
        self, document: int, min_tokens: int, rng: np.random.Generator
    ) -> np.ndarray:
        """Tokens from a random other document, from a random sentence on, about min_tokens."""
        count = self.shards.num_documents
        other = document
        if count > 1:  # a corpus of one document can only pair it with itself
            other = int(rng.integers(0, count - 1))
            other += other >= document
        begin, end = self.shards.document_sentences(other)
        first = int(rng.integers(begin, end))
        return np.concatenate(self._sentences(other, first, min_tokens))

    def _truncate(
        self, a: np.ndarray, b: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Shrink the longer side first to fit max_tokens, each cut from the front or the back
        at random (a closed form of BERT's token-by-token loop)."""
        keep_a, keep_b = truncated_lengths(len(a), len(b), self.max_tokens)
        front_a = int(rng.binomial(len(a) - keep_a, 0.5))
        front_b = int(rng.binomial(len(b) - keep_b, 0.5))
        return a[front_a : front_a + keep_a], b[front_b : front_b + keep_b]

    def state_dict(self) -> dict:
        return {**self._identity(), **self.order.state_dict(), "inner": self.inner}

    def load_state_dict(self, state: dict) -> None:
        check_state(state, self._identity())
        self.order.load_state_dict(state)
        self.inner = int(state["inner"])
