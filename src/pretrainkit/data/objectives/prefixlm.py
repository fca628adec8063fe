"""``prefixlm``: UniLM's prefix language model on plain text. A document's opening sentences
are a prefix that attends in both directions; the continuation is predicted causally and only
it carries loss (the chunking rule is in ``pretrainkit.data.prefix``; the prefix takes at most
``--prefix-share`` of an instance, half by default).

Trains the ``lm`` target of an encoder model (bert-tiny) as well as of a decoder-only one: the
batch's ``prefix_lengths`` set the attention pattern whatever the stack's own ``causal`` is."""

from __future__ import annotations

from dataclasses import dataclass

from pretrainkit.config.typed import check_range
from pretrainkit.data.objectives.base import OBJECTIVES, Objective


@dataclass
class PrefixOptions:
    prefix_share: float = 0.5
    """The largest share of an instance its prefix takes: the leading whole sentences that fit
    (prefixlm)."""

    def __post_init__(self) -> None:
        check_range(self.prefix_share, "prefix_share", 0.05, 0.95)


class PrefixLM(Objective):
    name = "prefixlm"
    targets = frozenset({"lm"})
    min_seq_length = 4  # [CLS] [SEP] one token [EOS]
    options_class = PrefixOptions

    def stream(self, shards, seq_length, seed, mask_prob, rank, world_size):
        from pretrainkit.data.prefix import PrefixStream

        share = self.options.prefix_share
        return PrefixStream(shards, self.name, seq_length, seed, rank, world_size, share)


OBJECTIVES.register("prefixlm")(PrefixLM())
