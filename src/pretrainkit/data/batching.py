"""From instances to the batch contract of docs/INTERFACES.md: padding and batch sources."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from pretrainkit.data.instances import GlobalPosition, InstanceStream
from pretrainkit.data.masking import IGNORE_INDEX
from pretrainkit.errors import ConfigError


def collate(instances: list[dict[str, np.ndarray]], pad_id: int) -> dict[str, torch.Tensor]:
    """Stack instances into an int64 batch, padding to the longest `input_ids`.

    Per-token arrays are padded with `pad_id` (input_ids), -100 (labels) or 0 (the rest);
    0-d values (`pair_labels`, class `labels`) are stacked to `[b]`. `attention_mask` is added.

    Args:
        instances: dicts with at least `input_ids`; all with the same keys.
        pad_id: the tokenizer's padding id.

    Returns:
        The batch: `[b, s]` per-token tensors and `[b]` scalars, int64 (float32 for float
        scalars: regression scores).
    """
    if not instances:
        raise ValueError("cannot collate an empty list of instances")
    lengths = [len(inst["input_ids"]) for inst in instances]
    size, longest = len(instances), max(lengths)
    batch: dict[str, np.ndarray] = {}
    for key in instances[0]:
        values = [inst[key] for inst in instances]
        if np.ndim(values[0]) == 0:
            # Class indices stay int64; regression scores stay float32.
            kind = np.float32 if np.asarray(values[0]).dtype.kind == "f" else np.int64
            batch[key] = np.asarray(values, dtype=kind)  # [b]
            continue
        fill = pad_id if key == "input_ids" else IGNORE_INDEX if key == "labels" else 0
        padded = np.full((size, longest), fill, dtype=np.int64)  # [b, s]
        for row, value in enumerate(values):
            padded[row, : len(value)] = value
        batch[key] = padded
    attention = np.arange(longest)[None, :] < np.asarray(lengths)[:, None]  # [b, s]
    batch["attention_mask"] = attention.astype(np.int64)
    return {key: torch.from_numpy(value) for key, value in batch.items()}


class BatchIterator:
    """Batch source (see INTERFACES.md) that groups a stream's instances into padded batches.

    Its position is the stream's position, taken at batch boundaries, so resuming from
    `state_dict()` yields the same following batches bit for bit.
    """

    def __init__(
        self,
        stream: InstanceStream,
        batch_size: int,
        pad_id: int,
        collate_fn: Callable[[list[dict[str, np.ndarray]], int], dict] = collate,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.stream, self.batch_size, self.pad_id = stream, batch_size, pad_id
        self.collate_fn = collate_fn  # the objective's (or task's) own, when it has one

    def next_batch(self) -> dict[str, torch.Tensor]:
        """The next `batch_size` instances, collated."""
        return self.collate_fn([next(self.stream) for _ in range(self.batch_size)], self.pad_id)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        return self.next_batch()

    def state_dict(self) -> dict:
        """JSON-serialisable data position."""
        return {"stream": self.stream.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a position saved by `state_dict`."""
        self.stream.load_state_dict(state["stream"])

    def load_reader_states(self, states: list[dict]) -> GlobalPosition:
        """Continue from the positions of every reader of a run with another number of
        data-parallel readers (`InstanceStream.load_reader_states`)."""
        resplit = getattr(self.stream, "load_reader_states", None)
        if resplit is None:
            raise ConfigError(
                f"{type(self.stream).__name__} keeps no global order: its data position "
                "resumes only with the number of data-parallel readers that saved it"
            )
        return resplit([state["stream"] for state in states])
