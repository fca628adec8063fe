"""``gsg``: PEGASUS gap-sentence generation (Zhang et al. 2020). In each block of whole
sentences, the gap sentences (the principal ones by ROUGE-1 F1 against the rest, the first
ones, or random ones) are replaced by a mask-sentence token ``<mask_1>`` in the source and
joined, in order, as the target."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pretrainkit.config.typed import check_choice, check_range
from pretrainkit.data.objectives.base import OBJECTIVES, Objective
from pretrainkit.errors import ConfigError

if TYPE_CHECKING:
    from pretrainkit.tokenization import Tokenizer

MASK_SENTENCE = "<mask_1>"  # PEGASUS's name; added to a tokenizer that lacks it


@dataclass
class GapSentenceOptions:
    sentence_selection: str = "principal"
    """How gap sentences are chosen (gsg): principal (top ROUGE-1 F1 against the rest of the
    block), lead (the first ones) or random; TencentPretrain's --sentence_selection_strategy."""
    gap_sentence_ratio: float = 0.3
    """Share of a block's sentences that become gap sentences, at least one (gsg)."""

    def __post_init__(self) -> None:
        from pretrainkit.data.noising import GAP_STRATEGIES

        check_choice(self.sentence_selection, GAP_STRATEGIES, "sentence_selection")
        check_range(self.gap_sentence_ratio, "gap_sentence_ratio", 0.0, 1.0)


class GapSentences(Objective):
    name = "gsg"
    targets = frozenset({"seq2seq_lm"})
    min_seq_length = 2  # <mask_1> </s>
    options_class = GapSentenceOptions

    def prepare_tokenizer(self, tokenizer, seq_length):
        if tokenizer.token_to_id(MASK_SENTENCE) is not None:
            return tokenizer
        return tokenizer.with_added_tokens([MASK_SENTENCE])

    def check(self, seq_length, tokenizer):
        super().check(seq_length, tokenizer)
        if tokenizer.token_to_id(MASK_SENTENCE) is None:
            raise ConfigError(
                f"objective 'gsg' needs the mask-sentence token {MASK_SENTENCE}, which this "
                "tokenizer lacks; preprocess adds it"
            )

    def noise(
        self, sentences: list[np.ndarray], rng: np.random.Generator, tokenizer: Tokenizer
    ) -> dict[str, np.ndarray]:
        """One block → ``{"input_ids": block with gaps masked </s>, "labels": gaps </s>}``."""
        from pretrainkit.data.noising import gap_sentence_count, select_gap_sentences

        options = self.options
        count = gap_sentence_count(len(sentences), options.gap_sentence_ratio)
        chosen = select_gap_sentences(sentences, count, options.sentence_selection, rng)
        gaps = set(chosen.tolist())
        mask = np.asarray([tokenizer.token_to_id(MASK_SENTENCE)], dtype=np.int64)
        eos = np.asarray([tokenizer.eos_id], dtype=np.int64)
        source = [mask if i in gaps else s for i, s in enumerate(sentences)]
        target = [s for i, s in enumerate(sentences) if i in gaps]
        return {
            "input_ids": np.concatenate([*source, eos]).astype(np.int64),
            "labels": np.concatenate([*target, eos]).astype(np.int64),
        }

    def stream(self, shards, seq_length, seed, mask_prob, rank, world_size):
        from functools import partial

        from pretrainkit.data.seq2seq import SentenceBlockStream

        noise = partial(self.noise, tokenizer=shards.tokenizer)
        return SentenceBlockStream(
            shards,
            self.name,
            seq_length,
            seq_length - 1,
            noise,
            self.options_dict(),
            seed,
            rank,
            world_size,
        )

    def collate(self, instances, pad_id):
        from pretrainkit.data.seq2seq import seq2seq_collate

        return seq2seq_collate(instances, pad_id)


OBJECTIVES.register("gsg")(GapSentences())
