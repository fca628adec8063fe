"""``bart``: denoising (Lewis et al. 2020). Blocks of whole sentences have their sentences
shuffled and 30 % of their tokens removed in Poisson(3)-long spans, each span replaced by one
mask token; the target is the block as written."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pretrainkit.config.typed import check_range
from pretrainkit.data.objectives.base import OBJECTIVES, Objective

if TYPE_CHECKING:
    from pretrainkit.tokenization import Tokenizer

MASK = "<mask>"  # added as the mask token to a tokenizer that has none


@dataclass
class InfillingOptions:
    mask_ratio: float = 0.3
    """Share of the tokens removed by text infilling (bart)."""
    poisson_lambda: float = 3.0
    """Mean of the Poisson distribution of infilled span lengths (bart)."""
    permute_sentences: bool = True
    """Shuffle the sentences of each block before infilling (bart)."""

    def __post_init__(self) -> None:
        check_range(self.mask_ratio, "mask_ratio", 0.0, 1.0)
        check_range(self.poisson_lambda, "poisson_lambda", 0.0, 100.0)


class Denoising(Objective):
    name = "bart"
    targets = frozenset({"seq2seq_lm"})
    min_seq_length = 3  # <s>, one token, </s>
    masks = True
    options_class = InfillingOptions

    def prepare_tokenizer(self, tokenizer, seq_length):
        if tokenizer.mask_id is not None:
            return tokenizer
        return tokenizer.with_added_tokens([MASK], {"mask": MASK})

    def noise(
        self, sentences: list[np.ndarray], rng: np.random.Generator, tokenizer: Tokenizer
    ) -> dict[str, np.ndarray]:
        """One block → ``{"input_ids": <s> noised </s>, "labels": <s> block </s>}``."""
        from pretrainkit.data.noising import permute_sentences, text_infilling

        options = self.options
        assert tokenizer.mask_id is not None  # Objective.check: bart masks
        original = np.concatenate(sentences)
        if options.permute_sentences:
            sentences = permute_sentences(sentences, rng)[0]
        source, _ = text_infilling(
            np.concatenate(sentences),
            rng,
            options.mask_ratio,
            options.poisson_lambda,
            tokenizer.mask_id,
        )
        bos, eos = [tokenizer.bos_id], [tokenizer.eos_id]
        return {
            "input_ids": np.concatenate([bos, source, eos]).astype(np.int64),
            "labels": np.concatenate([bos, original, eos]).astype(np.int64),
        }

    def stream(self, shards, seq_length, seed, mask_prob, rank, world_size):
        from functools import partial

        from pretrainkit.data.seq2seq import SentenceBlockStream

        noise = partial(self.noise, tokenizer=shards.tokenizer)
        return SentenceBlockStream(
            shards,
            self.name,
            seq_length,
            seq_length - 2,
            noise,
            self.options_dict(),
            seed,
            rank,
            world_size,
        )

    def collate(self, instances, pad_id):
        from pretrainkit.data.seq2seq import seq2seq_collate

        return seq2seq_collate(instances, pad_id)


OBJECTIVES.register("bart")(Denoising())
