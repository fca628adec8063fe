"""``t5``: span corruption (Raffel et al. 2020). Random spans of the token stream are each
replaced by a sentinel ``<extra_id_i>`` in the source; the target lists the spans behind their
sentinels. Sentinels a tokenizer lacks are added to it at preprocess time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pretrainkit.config.typed import check_range
from pretrainkit.data.objectives.base import OBJECTIVES, Objective
from pretrainkit.errors import ConfigError

if TYPE_CHECKING:
    from pretrainkit.tokenization import Tokenizer

SENTINEL = "<extra_id_{}>"
NUM_SENTINELS = 100  # as T5's vocabularies; more are added when an instance needs more


@dataclass
class SpanCorruptionOptions:
    noise_density: float = 0.15
    """Share of the tokens that are corrupted (t5)."""
    mean_span_length: float = 3.0
    """Mean length in tokens of a corrupted span (t5)."""

    def __post_init__(self) -> None:
        check_range(self.noise_density, "noise_density", 0.01, 0.9)
        check_range(self.mean_span_length, "mean_span_length", 1.0, 100.0)


def sentinel_ids(tokenizer: Tokenizer) -> list[int]:
    """Ids of ``<extra_id_0>``, ``<extra_id_1>``, ... as far as they run without a gap."""
    ids: list[int] = []
    while (token_id := tokenizer.token_to_id(SENTINEL.format(len(ids)))) is not None:
        ids.append(token_id)
    return ids


class SpanCorruption(Objective):
    name = "t5"
    targets = frozenset({"seq2seq_lm"})
    min_seq_length = 3  # a kept token, a sentinel and the end-of-text token
    options_class = SpanCorruptionOptions

    def raw_length(self, seq_length: int) -> int:
        """The most stream tokens whose corrupted source fits in ``seq_length`` (with its
        end-of-text token)."""
        from pretrainkit.data.noising import span_counts

        options = self.options
        best = 2
        # The source keeps at least (1 - density) of the tokens, which bounds the search.
        for length in range(2, int((seq_length + 2) / (1 - options.noise_density)) + 2):
            noise, spans = span_counts(length, options.noise_density, options.mean_span_length)
            if length - noise + spans + 1 <= seq_length:
                best = length
        return best

    def num_spans(self, seq_length: int) -> int:
        """Sentinels an instance of ``seq_length`` needs."""
        from pretrainkit.data.noising import span_counts

        options = self.options
        raw = self.raw_length(seq_length)
        return span_counts(raw, options.noise_density, options.mean_span_length)[1]

    def prepare_tokenizer(self, tokenizer, seq_length):
        count = max(NUM_SENTINELS, self.num_spans(seq_length))
        if len(sentinel_ids(tokenizer)) >= count:
            return tokenizer
        return tokenizer.with_added_tokens([SENTINEL.format(i) for i in range(count)])

    def check(self, seq_length, tokenizer):
        super().check(seq_length, tokenizer)
        have, need = len(sentinel_ids(tokenizer)), self.num_spans(seq_length)
        if have < need:
            raise ConfigError(
                f"objective 't5' with seq_length {seq_length}, noise_density "
                f"{self.options.noise_density} and mean_span_length "
                f"{self.options.mean_span_length} needs {need} sentinel tokens "
                f"<extra_id_0>..., the tokenizer has {have}; preprocess again with these options "
                "(preprocess adds the sentinels)"
            )

    def stream(self, shards, seq_length, seed, mask_prob, rank, world_size):
        from functools import partial

        from pretrainkit.data.noising import span_corruption
        from pretrainkit.data.seq2seq import SpanCorruptionStream

        noise = partial(
            span_corruption,
            noise_density=self.options.noise_density,
            mean_span_length=self.options.mean_span_length,
            sentinel_ids=sentinel_ids(shards.tokenizer),
            eos_id=shards.tokenizer.eos_id,
        )
        raw = self.raw_length(seq_length)
        return SpanCorruptionStream(
            shards, self.name, seq_length, raw, noise, self.options_dict(), seed, rank, world_size
        )

    def collate(self, instances, pad_id):
        from pretrainkit.data.seq2seq import seq2seq_collate

        return seq2seq_collate(instances, pad_id)


OBJECTIVES.register("t5")(SpanCorruption())
