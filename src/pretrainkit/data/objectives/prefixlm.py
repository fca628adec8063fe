"""``prefixlm``: UniLM's prefix language model on plain text. A document's opening sentences
are a prefix that attends in both directions; the continuation is predicted causally and only
it carries loss (the chunking rule is in ``pretrainkit.data.prefix``; the prefix takes at most
half of an instance, ``PREFIX_SHARE``, hard-coded while the objective has no options).

Trains the ``lm`` target of an encoder model (bert-tiny) as well as of a decoder-only one: the
batch's ``prefix_lengths`` set the attention pattern whatever the stack's own ``causal`` is."""

from __future__ import annotations

from pretrainkit.data.objectives.base import OBJECTIVES, Objective


class PrefixLM(Objective):
    name = "prefixlm"
    targets = frozenset({"lm"})
    min_seq_length = 4  # [CLS] [SEP] one token [EOS]

    def stream(self, shards, seq_length, seed, mask_prob, rank, world_size):
        from pretrainkit.data.prefix import PrefixStream

        return PrefixStream(shards, self.name, seq_length, seed, rank, world_size)


OBJECTIVES.register("prefixlm")(PrefixLM())
