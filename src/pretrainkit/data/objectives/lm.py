"""``lm``: full windows of the token stream for causal language modelling (labels = inputs,
an end-of-text token between documents)."""

from __future__ import annotations

from pretrainkit.data.objectives.base import OBJECTIVES, Objective


class CausalLM(Objective):
    name = "lm"
    targets = frozenset({"lm"})
    min_seq_length = 2

    def stream(self, shards, seq_length, seed, mask_prob, rank, world_size):
        from pretrainkit.data.streams import WindowStream

        return WindowStream(shards, self.name, seq_length, seed, mask_prob, rank, world_size)


OBJECTIVES.register("lm")(CausalLM())
