"""``albert``: masked sentence pairs with sentence-order prediction (b follows a; half of the
pairs are swapped)."""

from __future__ import annotations

from pretrainkit.data.objectives.base import OBJECTIVES, Objective


class AlbertPairs(Objective):
    name = "albert"
    targets = frozenset({"mlm", "sop"})
    min_seq_length = 5
    masks = True
    packable = True

    def stream(self, shards, seq_length, seed, mask_prob, rank, world_size):
        from pretrainkit.data.pairs import PairStream

        return PairStream(shards, self.name, seq_length, seed, mask_prob, rank, world_size)


OBJECTIVES.register("albert")(AlbertPairs())
