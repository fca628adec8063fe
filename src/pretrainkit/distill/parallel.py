"""Parallel sentences for sentence-embedding distillation: ``source<TAB>translation`` lines,
a stream of the student's two views with the teacher's cached vector of the source, and their
collation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretrainkit.data.instances import RowStream
from pretrainkit.errors import DataError
from pretrainkit.fileio import read_utf8
from pretrainkit.tokenization import Tokenizer


@dataclass
class ParallelData:
    """Sentence pairs in file order (several files concatenated)."""

    paths: list[Path]
    sources: list[str]
    translations: list[str]

    def __len__(self) -> int:
        return len(self.sources)


def read_parallel(paths: Sequence[str | Path]) -> ParallelData:
    """Read ``source<TAB>translation`` lines (no header); blank lines are skipped.

    Raises:
        DataError: a line without exactly one tab, or with an empty side (file and line named).
    """
    if not paths:
        raise DataError("no parallel files given")
    sources: list[str] = []
    translations: list[str] = []
    for path in map(Path, paths):
        text = read_utf8(path)
        for number, line in enumerate(text.split("\n"), start=1):
            line = line.rstrip("\r")
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
                side = (
                    "a missing side"
                    if len(parts) < 2 or not all(p.strip() for p in parts)
                    else f"{len(parts)} columns"
                )
                raise DataError(f"expected source<TAB>translation, found {side}", path, line=number)
            sources.append(parts[0])
            translations.append(parts[1])
    if not sources:
        raise DataError("no sentence pairs", paths[0])
    return ParallelData([Path(p) for p in paths], sources, translations)


class ParallelStream(RowStream):
    """Endless stream of pairs, reshuffled every epoch: the student's ids of both sides, the
    teacher's vector of the source (row ``i`` of ``teacher_vectors``)."""

    def __init__(
        self,
        data: ParallelData,
        tokenizer: Tokenizer,
        teacher_vectors: np.ndarray,
        seq_length: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        if len(teacher_vectors) != len(data):
            raise ValueError("one teacher vector per pair")
        self.start(len(data), seed, rank, world_size, data.paths[0])
        self.seq_length, self.seed = seq_length, seed
        self.vectors = teacher_vectors.astype(np.float32)

        def ids(texts: list[str]) -> list[np.ndarray]:
            return [
                np.asarray(tokenizer.build_inputs(row, max_length=seq_length)[0], dtype=np.int64)
                for row in tokenizer.encode_batch(texts)
            ]

        self.sources, self.translations = ids(data.sources), ids(data.translations)

    def __next__(self) -> dict[str, np.ndarray]:
        _, _, row = self.order.current()
        self.order.advance()
        return {
            "input_ids": self.sources[row],
            "translation_input_ids": self.translations[row],
            "teacher_sentence": self.vectors[row],
        }


def _padded(rows: list[np.ndarray], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(len(r) for r in rows)
    ids = np.full((len(rows), longest), pad_id, dtype=np.int64)  # [b, s]
    mask = np.zeros((len(rows), longest), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


def collate_views(instances: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Each view padded to its own longest row, with its mask; vectors stacked ``[b, h]``."""
    batch: dict[str, torch.Tensor] = {}
    for key in instances[0]:
        values = [inst[key] for inst in instances]
        if key.endswith("input_ids"):
            prefix = key[: -len("input_ids")]
            batch[key], batch[prefix + "attention_mask"] = _padded(values, pad_id)
        else:
            batch[key] = torch.from_numpy(np.stack(values))
    return batch
