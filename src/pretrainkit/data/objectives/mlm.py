"""``mlm``: full windows of the token stream in ``[CLS] ... [SEP]``, dynamically masked
(RoBERTa-style: no sentence pairs)."""

from __future__ import annotations

from pretrainkit.data.objectives.base import OBJECTIVES, Objective


class MaskedLM(Objective):
    name = "mlm"
    targets = frozenset({"mlm"})
    min_seq_length = 3
    masks = True
    packable = True

    def stream(self, shards, seq_length, seed, mask_prob, rank, world_size):
        from pretrainkit.data.streams import WindowStream

        return WindowStream(shards, self.name, seq_length, seed, mask_prob, rank, world_size)


OBJECTIVES.register("mlm")(MaskedLM())
