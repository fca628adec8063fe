"""``sft``: supervised fine-tuning of a decoder-only model on instruction data.

The corpus is JSONL, one example a line: ``{"instruction", "input", "output"}`` or chat turns
``{"messages": [{"role", "content"}, ...]}`` (``pretrainkit.data.instructions``). Loss is on the
response tokens only; several examples are packed into one window, each attending only to
itself with positions restarting at 0 (``pretrainkit.data.packing``)."""

from __future__ import annotations

from pretrainkit.data.objectives.base import OBJECTIVES, Objective


class SupervisedFineTuning(Objective):
    name = "sft"
    targets = frozenset({"lm"})
    min_seq_length = 3  # one prompt token, one response token, [EOS]

    def read_documents(self, path, skip_bad_lines, info):
        from pretrainkit.data.instructions import read_instruction_documents

        return read_instruction_documents(path, skip_bad_lines, info)

    def stream(self, shards, seq_length, seed, mask_prob, rank, world_size):
        from pretrainkit.data.packing import PackedInstructionStream

        return PackedInstructionStream(shards, self.name, seq_length, seed, rank, world_size)


OBJECTIVES.register("sft")(SupervisedFineTuning())
