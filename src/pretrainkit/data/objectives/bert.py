"""``bert``: masked sentence pairs with next-sentence prediction (b follows a, or comes from
another document half of the time)."""

from __future__ import annotations

from pretrainkit.data.objectives.base import OBJECTIVES, Objective


class BertPairs(Objective):
    name = "bert"
    targets = frozenset({"mlm", "nsp"})
    min_seq_length = 5
    masks = True
    packable = True

    def stream(self, shards, seq_length, seed, mask_prob, rank, world_size):
        from pretrainkit.data.pairs import PairStream

        return PairStream(shards, self.name, seq_length, seed, mask_prob, rank, world_size)


OBJECTIVES.register("bert")(BertPairs())
