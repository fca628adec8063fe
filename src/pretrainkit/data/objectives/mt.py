"""``mt``: parallel text as sequence-to-sequence pairs. Each ``source<TAB>target`` line of the
corpus is one pair; the source feeds the encoder, the target the decoder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pretrainkit.data.corpus import CorpusFile, _bad_line, _raw_lines
from pretrainkit.data.objectives.base import OBJECTIVES, Objective


def read_parallel_documents(
    path: Path, skip_bad_lines: bool, info: CorpusFile
) -> Iterator[list[str]]:
    """Documents of a parallel-text file: each ``source<TAB>target`` line is one document of
    two pieces. Blank lines are passed over; a line without exactly one TAB, or with an empty
    side, is a DataError naming file and line (or, with ``skip_bad_lines``, counted)."""
    for number, raw in _raw_lines(path, info):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            message = f"not UTF-8 (byte {err.start} of the line)"
            _bad_line(message, path, number, skip_bad_lines, info)
            continue
        if not text.strip():
            continue
        sides = text.split("\t")
        if len(sides) != 2:
            message = f"expected source<TAB>target (one TAB), found {len(sides) - 1} TABs"
            _bad_line(message, path, number, skip_bad_lines, info)
            continue
        source, target = sides[0].strip(), sides[1].strip()
        if not source or not target:
            side = "source" if not source else "target"
            _bad_line(f"the {side} side is empty", path, number, skip_bad_lines, info)
            continue
        yield [source, target]


class ParallelText(Objective):
    name = "mt"
    targets = frozenset({"seq2seq_lm"})
    min_seq_length = 2  # one token and the end-of-text token a side

    def read_documents(self, path, skip_bad_lines, info):
        return read_parallel_documents(path, skip_bad_lines, info)

    def stream(self, shards, seq_length, seed, mask_prob, rank, world_size):
        from pretrainkit.data.seq2seq import ParallelTextStream

        return ParallelTextStream(shards, self.name, seq_length, seed, rank, world_size)

    def collate(self, instances, pad_id):
        from pretrainkit.data.seq2seq import seq2seq_collate

        return seq2seq_collate(instances, pad_id)


OBJECTIVES.register("mt")(ParallelText())
