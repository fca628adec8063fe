"""From instances to the batch contract of docs/INTERFACES.md: padding and batch sources."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from pretrainkit.data.instances import GlobalPosition, InstanceStream
from pretrainkit.data.masking import IGNORE_INDEX
from pretrainkit.errors import ConfigError


def one_row_each(
    instances: list[dict[str, np.ndarray]], keys: list[str], width: int, pad_id: int
) -> dict[str, np.ndarray]:
    """``keys`` of the instances, one row per instance: 0-d values stacked to ``[b]`` (class
    indices int64, regression scores float32), per-token values padded to ``[b, width]`` with
    ``pad_id`` (input_ids), -100 (labels) or 0 (the rest)."""
    batch: dict[str, np.ndarray] = {}
    for key in keys:
        values = [inst[key] for inst in instances]
        if np.ndim(values[0]) == 0:
            kind = np.float32 if np.asarray(values[0]).dtype.kind == "f" else np.int64
            batch[key] = np.asarray(values, dtype=kind)  # [b]
            continue
        fill = pad_id if key == "input_ids" else IGNORE_INDEX if key == "labels" else 0
        padded = np.full((len(instances), width), fill, dtype=np.int64)  # [b, width]
        for row, value in enumerate(values):
            padded[row, : len(value)] = value
        batch[key] = padded
    return batch


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
    longest = max(lengths)
    batch = one_row_each(instances, list(instances[0]), longest, pad_id)
    attention = np.arange(longest)[None, :] < np.asarray(lengths)[:, None]  # [b, s]
    batch["attention_mask"] = attention.astype(np.int64)
    return {key: torch.from_numpy(value) for key, value in batch.items()}


# The per-token keys the encoder reads; in a packed batch they share rows with other examples.
PACKED_KEYS = ("input_ids", "token_type_ids")


def collate_packed(
    instances: list[dict[str, np.ndarray]], pad_id: int, capacity: int | None = None
) -> dict[str, torch.Tensor]:
    """Pack instances into as few rows of at most ``capacity`` tokens as first-fit decreasing
    allows, so that the encoder spends no work on padding (short sentences padded to their
    batch's longest are mostly padding). By default a row is as wide as the longest example,
    so the packed batch is the padded one with fewer rows: wider rows pack a little tighter,
    but attention over a row costs its width squared whatever the mask hides (MiniLM on SST-2
    batches, bf16: 1.43x transformers' padded step with rows of 128, 1.93x with rows as wide
    as the longest example; BENCHMARKS.md).

    Every example keeps its own ``position_ids`` (from 0) and ``example_ids`` (0, 1, ... over
    the batch; -1 on row padding), which the encoder turns into block-diagonal attention: a
    packed example computes what it computes alone. ``unpack_index`` ``[n, longest]`` holds each
    example's flat token positions in the packed ``[rows * length]`` layout (-1 past its end);
    the model gathers the encoder's output back into one row per example with it, so the
    targets read ``[n, longest, h]`` as from ``collate`` and need not know about packing.

    Args:
        instances: dicts with 1-D ``input_ids`` (and ``token_type_ids``), 0-d per-example values
            (class labels, scores, span positions) and other 1-D per-token values (token labels),
            which stay one row per example.
        pad_id: the tokenizer's padding id.
        capacity: the most tokens in a packed row; None or less than the longest example: the
            longest example's length.

    Returns:
        ``input_ids``, ``token_type_ids``, ``attention_mask``, ``position_ids`` and
        ``example_ids`` ``[rows, length]``; ``unpack_index`` ``[n, longest]``; the 0-d values
        stacked to ``[n]`` and the other per-token values padded to ``[n, longest]``.
    """
    if not instances:
        raise ValueError("cannot collate an empty list of instances")
    if "input_ids" not in instances[0]:
        raise ConfigError(f"packing needs instances with input_ids, got {sorted(instances[0])}")
    lengths = [len(inst["input_ids"]) for inst in instances]
    longest = max(lengths)
    capacity = max(capacity or 0, longest)
    rows: list[list[int]] = []  # the examples of each row, in placing order
    room: list[int] = []
    for example in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        row = next((r for r, free in enumerate(room) if free >= lengths[example]), len(rows))
        if row == len(rows):
            rows.append([])
            room.append(capacity)
        rows[row].append(example)
        room[row] -= lengths[example]
    width = capacity - min(room)  # the fullest row
    packed = {key: np.full((len(rows), width), 0, dtype=np.int64) for key in PACKED_KEYS}
    packed["input_ids"][:] = pad_id
    positions = np.zeros((len(rows), width), dtype=np.int64)
    example_ids = np.full((len(rows), width), -1, dtype=np.int64)
    unpack = np.full((len(instances), longest), -1, dtype=np.int64)
    for r, members in enumerate(rows):
        cursor = 0
        for example in members:
            n = lengths[example]
            span = slice(cursor, cursor + n)
            for key in PACKED_KEYS:
                if key in instances[example]:
                    packed[key][r, span] = instances[example][key]
            positions[r, span] = np.arange(n)
            example_ids[r, span] = example
            unpack[example, :n] = r * width + np.arange(cursor, cursor + n)
            cursor += n
    batch = {key: packed[key] for key in PACKED_KEYS if key in instances[0]}
    batch["attention_mask"] = (example_ids >= 0).astype(np.int64)
    batch["position_ids"], batch["example_ids"], batch["unpack_index"] = (
        positions,
        example_ids,
        unpack,
    )
    per_example = [key for key in instances[0] if key not in PACKED_KEYS]
    batch |= one_row_each(instances, per_example, longest, pad_id)  # [n] or [n, longest]
    return {key: torch.from_numpy(value) for key, value in batch.items()}


def pack_padded(batch: dict[str, Any], pad_id: int) -> dict[str, Any]:
    """An evaluation batch padded to its longest (``collate``'s layout) in ``collate_packed``'s:
    the same examples in the same order, so the model's per-example outputs are the padded
    batch's (within float rounding) for less work.

    Per-token tensors ``[n, s]`` are cut to each example's length (``attention_mask``, which
    must be right padding), ``[n]`` tensors stay per example, and the task's own keys (``_``
    prefix) and non-tensors pass through unchanged.

    Raises:
        ConfigError: a batch without ``attention_mask``, with left padding, or with a model
            input packing cannot place (``position_ids``, ``example_ids``: packed already).
    """
    mask = batch.get("attention_mask")
    if not torch.is_tensor(mask) or mask.dim() != 2:
        raise ConfigError("packing an evaluation batch needs its attention_mask [n, s]")
    lengths = mask.sum(1)
    if not bool((mask == (torch.arange(mask.shape[1]) < lengths[:, None])).all()):
        raise ConfigError("packing an evaluation batch needs right padding (ones, then zeros)")
    own = {k: v for k, v in batch.items() if k.startswith("_") or not torch.is_tensor(v)}
    inputs = {k: v for k, v in batch.items() if k not in own and k != "attention_mask"}
    placed = {"position_ids", "example_ids", "unpack_index"} & set(inputs)
    if placed:
        raise ConfigError(f"cannot pack an evaluation batch that has {sorted(placed)}")
    instances = [
        {k: (v[i, :n] if v.dim() == 2 else v[i]).numpy() for k, v in inputs.items()}
        for i, n in enumerate(lengths.tolist())
    ]
    return collate_packed(instances, pad_id) | own


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
