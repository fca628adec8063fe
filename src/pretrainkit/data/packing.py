"""Instruction examples packed into windows, for ``sft``.

An example is one document of the shards whose pieces alternate prompt and response (see
``pretrainkit.data.instructions``); its tokens are ``prompt response [EOS] prompt response
[EOS] ...`` and only response tokens and their ``[EOS]`` carry loss.

Packing: examples are visited in a seeded order per epoch; a window takes the next example,
then the following ones while they fit in ``seq_length`` (greedy, in order, so a saved
position is just the order's cursor). Every example keeps its own ``example_ids`` number and
``position_ids`` that restart at 0, which the model turns into a block-diagonal causal mask:
a packed example computes exactly what it computes alone.

An example longer than ``seq_length`` fills a window alone, cut to its first ``seq_length``
tokens, or to its last ones when the first hold no response token.
"""

from __future__ import annotations

import numpy as np

from pretrainkit.data.instances import EpochOrder, ShardStream, check_state
from pretrainkit.data.instructions import check_pieces
from pretrainkit.data.masking import IGNORE_INDEX
from pretrainkit.data.shards import Shards
from pretrainkit.errors import DataError

Example = tuple[np.ndarray, np.ndarray]  # input ids, labels


class PackedInstructionStream(ShardStream):
    """Windows of whole instruction examples with ``labels`` on the responses only.

    An instance holds ``[n]`` arrays ``input_ids``, ``labels``, ``token_type_ids`` (zeros),
    ``position_ids`` (0, 1, ... per example) and ``example_ids`` (1, 2, ... per example), with
    ``n <= seq_length``, and ``prefix_lengths`` 0 (a 0-d array), which makes the attention
    causal even in a bidirectional encoder stack.
    """

    def __init__(
        self,
        shards: Shards,
        objective: str,
        seq_length: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.shards, self.objective = shards, objective
        self.seq_length, self.seed = seq_length, seed
        if shards.num_documents < world_size:
            raise DataError(
                f"{shards.num_documents} examples cannot be shared by {world_size} processes",
                shards.directory,
            )
        self.order = EpochOrder(shards.num_documents, seed, rank, world_size)
        self._cache: tuple[int, Example] | None = None

    def example(self, document: int) -> Example:
        """Input ids and labels of one example, cut to ``seq_length``."""
        if self._cache is not None and self._cache[0] == document:
            return self._cache[1]
        begin, end = self.shards.document_sentences(document)
        check_pieces(end - begin, document, self.shards.directory)
        start = self.shards.sentence_start(begin)
        bounds = np.asarray(self.shards.sentence_ends[begin:end], dtype=np.int64) - start
        pieces = np.split(self.shards.read_tokens(start, start + int(bounds[-1])), bounds[:-1])
        eos = np.asarray([self.shards.tokenizer.eos_id], dtype=np.int64)
        ids: list[np.ndarray] = []
        labels: list[np.ndarray] = []
        for prompt, response in zip(pieces[0::2], pieces[1::2]):
            ids += [prompt, response, eos]
            labels += [np.full(len(prompt), IGNORE_INDEX, dtype=np.int64), response, eos]
        example = (np.concatenate(ids), np.concatenate(labels))
        if len(example[0]) > self.seq_length:
            head = slice(0, self.seq_length)
            if not (example[1][head] != IGNORE_INDEX).any():
                head = slice(len(example[0]) - self.seq_length, None)
            example = (example[0][head], example[1][head])
        self._cache = (document, example)
        return example

    def __next__(self) -> dict[str, np.ndarray]:
        examples: list[Example] = []
        used = 0
        while True:
            _, _, document = self.order.current()
            example = self.example(document)
            if examples and used + len(example[0]) > self.seq_length:
                break  # it opens the next window
            examples.append(example)
            used += len(example[0])
            self.order.advance()
        ids = np.concatenate([example[0] for example in examples])
        labels = np.concatenate([example[1] for example in examples])
        lengths = [len(example[0]) for example in examples]
        starts = np.cumsum([0, *lengths[:-1]])
        # A first token is never predicted: its label would be learned from the previous
        # example's last token, across the boundary the mask draws.
        labels[starts] = IGNORE_INDEX
        positions = np.concatenate([np.arange(length) for length in lengths])
        example_ids = np.repeat(np.arange(1, len(lengths) + 1), lengths)
        return {
            "input_ids": ids,
            "token_type_ids": np.zeros(len(ids), dtype=np.int64),
            "labels": labels,
            "position_ids": positions.astype(np.int64),
            "example_ids": example_ids.astype(np.int64),
            "prefix_lengths": np.asarray(0, dtype=np.int64),
        }

    def state_dict(self) -> dict:
        return {**self._identity(), **self.order.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        check_state(state, self._identity())
        self.order.load_state_dict(state)
