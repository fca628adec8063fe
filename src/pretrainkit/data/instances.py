"""The `InstanceStream` interface and the seeded per-epoch order every stream shares."""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from pretrainkit.errors import ConfigError, DataError


class InstanceStream(abc.ABC):
    """An endless, deterministic iterator of training instances.

    An instance is a dict of int64 numpy arrays: `[s]` per-token arrays (`input_ids`,
    `token_type_ids`, token `labels`) and 0-d scalars (`pair_labels`, class `labels`). The
    stream is a pure function of its seed and position, and `state_dict` captures the position.
    """

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    @abc.abstractmethod
    def __next__(self) -> dict[str, np.ndarray]:
        """The next instance."""

    @abc.abstractmethod
    def state_dict(self) -> dict:
        """JSON-serialisable position; `load_state_dict` continues exactly there."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict) -> None:
        """Move to a position saved by `state_dict`."""

    def load_reader_states(self, states: list[dict]) -> GlobalPosition:
        """Continue the global order from the positions of another number of readers.

        ``states`` are the ``state_dict()`` of every reader of the saved run, in rank order;
        this stream (with its own rank and number of readers) takes its share of what follows
        (see `global_position`). A stream that reads through an `EpochOrder` named ``order``
        and names its configuration in ``_identity()`` (every stream of pretrainkit) gets this
        for free; a within-item position (``inner``: the next pair of a document) restarts
        the item. The saved configuration must match except for the rank and reader count.

        Raises:
            ConfigError: The positions belong to another configuration, or hold state that
                cannot be re-split (a stream without an `EpochOrder`).
        """
        order = getattr(self, "order", None)
        identity = getattr(self, "_identity", None)
        if not isinstance(order, EpochOrder) or not callable(identity):
            raise ConfigError(
                f"{type(self).__name__} keeps no global order: its data position resumes only "
                "with the number of data-parallel readers that saved it"
            )
        expected = {k: v for k, v in identity().items() if k not in ("rank", "world_size")}
        known = {*expected, "rank", "world_size", *order.state_dict(), "inner"}
        for rank, state in enumerate(states):
            check_state(state, expected)
            where = (state.get("rank", rank), state.get("world_size", len(states)))
            if where != (rank, len(states)):
                raise ConfigError(
                    f"cannot resume: data position {rank} of {len(states)} was saved by rank "
                    f"{where[0]} of {where[1]}"
                )
            unknown = sorted(set(state) - known)
            if unknown:
                raise ConfigError(
                    f"cannot resume on another number of readers: the saved data position "
                    f"holds {unknown}, which {type(self).__name__} cannot re-split"
                )
        position = order.continue_from(states)
        if hasattr(self, "inner"):
            self.inner = 0
        partial = sum(int(state.get("inner", 0)) for state in states)
        return replace(position, partial=partial)


class ShardStream(InstanceStream):
    """A stream over shards in a seeded epoch order; subclasses set the attributes below."""

    shards: Any
    objective: str
    seq_length: int
    seed: int
    order: EpochOrder

    def _identity(self) -> dict:
        """What a saved position is only valid for: the same data, objective, seed and rank."""
        return {
            "objective": self.objective,
            "seq_length": self.seq_length,
            "seed": self.seed,
            "rank": self.order.rank,
            "world_size": self.order.world_size,
            "content_hash": self.shards.manifest.get("content_hash"),
        }


class EpochOrder:
    """Visits `size` items in a fresh seeded permutation each epoch.

    With `world_size > 1`, rank r takes every world_size-th slot of the same permutation, so the
    ranks see disjoint items and advance together through one global order (W readers drawing
    one item each cover slots 0 … W-1, then W … 2W-1). Only the permutation of the current
    epoch is held in memory.

    `offset` is where this layout's share of the current epoch begins: 0, except in the epoch
    in which a run resumed on another number of readers (`continue_from`); rank r then takes
    slots offset + r, offset + r + W, ... of that epoch, and every later epoch starts at 0.
    """

    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} must be in [0, world_size={world_size})")
        self.size, self.seed, self.rank, self.world_size = size, seed, rank, world_size
        self.slots = len(range(rank, size, world_size))  # slots of this rank in a whole epoch
        self.epoch = 0
        self.cursor = 0
        self.offset = 0
        self._permutation: tuple[int, np.ndarray] | None = None

    def current(self) -> tuple[int, int, int]:
        """`(epoch, slot, item)` at the cursor; `slot` numbers positions within the epoch."""
        if self.cursor >= len(range(self.offset + self.rank, self.size, self.world_size)):
            self.epoch, self.cursor, self.offset = self.epoch + 1, 0, 0
        if self._permutation is None or self._permutation[0] != self.epoch:
            rng = np.random.default_rng([self.seed, self.epoch])
            self._permutation = (self.epoch, rng.permutation(self.size))
        slot = self.offset + self.rank + self.cursor * self.world_size
        return self.epoch, slot, int(self._permutation[1][slot])

    def advance(self) -> None:
        self.cursor += 1

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor, "offset": self.offset}

    def load_state_dict(self, state: dict) -> None:
        # Positions saved before offsets existed have none: their epochs start at slot 0.
        epoch, cursor = int(state["epoch"]), int(state["cursor"])
        offset = int(state.get("offset", 0))
        if min(epoch, cursor, offset) < 0 or offset >= max(self.size, 1):
            raise ConfigError(
                f"cannot resume: the saved data position (epoch {epoch}, cursor {cursor}, "
                f"offset {offset}) is not a position in an order of {self.size} items"
            )
        self.epoch, self.cursor, self.offset = epoch, cursor, offset

    def continue_from(self, states: list[dict]) -> GlobalPosition:
        """Take this rank's share of the global order after the positions of other readers.

        ``states`` are the `state_dict` of every reader of another layout, in rank order. This
        rank continues at slot `offset + rank` of the epoch that `global_position` finds.
        """
        position = global_position(states, self.size)
        self.epoch, self.cursor, self.offset = position.epoch, 0, position.slot
        return position


@dataclass(frozen=True)
class GlobalPosition:
    """Where the readers of a saved run left the global order (see `global_position`).

    Attributes:
        epoch: The epoch to continue.
        slot: The first slot of `epoch` that not every reader had read: the new layout's
            readers start here.
        readers: How many readers saved the positions.
        repeated: Items (windows, documents, rows) at or past `slot` that some reader had read
            already, and which the new layout reads again; 0 when the readers were in lockstep.
        partial: Instances already drawn from items in progress (the pairs of a document a
            reader was partway through), which are drawn again when the item restarts.
    """

    epoch: int
    slot: int
    readers: int
    repeated: int = 0
    partial: int = 0

    @property
    def exact(self) -> bool:
        """Every instance is read once: the saved readers had all stopped at `slot`."""
        return self.repeated == 0 and self.partial == 0

    def describe(self, readers: int) -> str:
        """One line for the log of a run that resumes on `readers` readers."""
        where = (
            f"data position: {self.readers} data-parallel reader(s) -> {readers}; the global "
            f"order continues at epoch {self.epoch}, slot {self.slot}"
        )
        if self.exact:
            return f"{where} (exact: every reader had stopped there)"
        line = (
            f"{where}, the first slot that not every reader had read (the readers were not in "
            f"lockstep: epochs or items of unequal length); {self.repeated} item(s) past it "
            "that some reader had read already will be read a second time"
        )
        if self.partial:
            line += (
                f", and {self.partial} instance(s) drawn from items that readers were partway "
                "through will be drawn again"
            )
        return line


def global_position(states: list[dict], size: int) -> GlobalPosition:
    """The first slot of the global order that not every saved reader had read.

    Reader r of W, at `(epoch, cursor, offset)`, has read every slot of the earlier epochs and
    slots offset + r + k·W, k < cursor, of its epoch; its next slot is offset + r + cursor·W
    (slot r of the next epoch once that is past the end). In lockstep (the same cursor
    everywhere: one instance per item, the same number drawn by each) the readers' next slots
    are s, s+1, ..., s+W-1 and slot s is exact: everything before it was read, nothing after.
    Otherwise the readers differ (an epoch whose size W does not divide ends earlier for
    some ranks; items giving several instances, like documents cut into pairs, are used up
    at unequal rates) and the earliest next slot is returned: nothing is lost, and the items
    past it that some reader had read (`repeated`) are read again. We chose repeating over
    refusing (a run whose layout has to change, a machine lost, could not continue) and over
    skipping exactly what was read (every later position would have to carry a list of
    read slots, and the batches after the switch would still differ from any uninterrupted
    run). How many: for one instance per item, readers drift apart by at most one item per
    epoch passed (the shares differ by one), so a few items; for documents cut into pairs or
    blocks, by the random walk of the instances per document, which can reach many documents
    in a long run (still a small share of the corpus). The log says how many either way.

    Args:
        states: Every reader's `EpochOrder.state_dict()`, in rank order.
        size: Items per epoch.
    """
    count = len(states)
    if count < 1:
        raise ConfigError("cannot resume: the checkpoint holds no data position")

    def read(first: int, low: int, high: int) -> int:
        """How many of the slots first, first + W, ... lie in [low, high)."""
        return max(0, len(range(first, high, count)) - len(range(first, low, count)))

    heads = []  # (epoch, next slot, offset of that epoch) per reader
    for rank, state in enumerate(states):
        epoch, cursor = int(state["epoch"]), int(state["cursor"])
        offset = int(state.get("offset", 0))
        slot = offset + rank + cursor * count
        if slot >= size:  # its share of the epoch is used up; the next one starts at 0
            epoch, slot, offset = epoch + 1, rank, 0
        heads.append((epoch, slot, offset))
    epoch, slot, offset = min(heads)
    repeated = 0
    for rank, (head_epoch, head_slot, head_offset) in enumerate(heads):
        if head_epoch == epoch:
            repeated += read(head_offset + rank, slot, head_slot)
            continue
        # Ahead by one or more epochs: the rest of the frontier's epoch (whose offset all the
        # readers shared: a layout starts in one epoch, so later ones begin at 0), the whole
        # epochs between, and the start of its own.
        repeated += read(offset + rank, slot, size)
        repeated += (head_epoch - epoch - 1) * len(range(rank, size, count))
        repeated += read(head_offset + rank, 0, head_slot)
    return GlobalPosition(epoch, slot, count, repeated)


class RowStream(InstanceStream):
    """A stream over a fixed number of rows in a seeded epoch order (the task streams).

    Subclasses set ``order`` (an ``EpochOrder`` over the rows), ``seed`` and, where instances
    are cut to a length, ``seq_length``; a saved position is valid only for the same rows,
    length, seed and rank (``_identity``, which a subclass may extend).
    """

    order: EpochOrder
    seed: int

    def start(self, rows: int, seed: int, rank: int, world_size: int, where: object) -> None:
        """Set the seeded epoch order over ``rows`` rows; a DataError naming ``where`` when there
        are fewer rows than processes to share them."""
        if rows < world_size:
            raise DataError(f"{rows} rows cannot be shared by {world_size} processes", where)
        self.seed = seed
        self.order = EpochOrder(rows, seed, rank, world_size)

    def _identity(self) -> dict:
        identity = {
            "size": self.order.size,
            "seed": self.seed,
            "rank": self.order.rank,
            "world_size": self.order.world_size,
        }
        length = getattr(self, "seq_length", None)
        if length is not None:
            identity["seq_length"] = length
        return identity

    def state_dict(self) -> dict:
        return {**self._identity(), **self.order.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        check_state(state, self._identity())
        self.order.load_state_dict(state)


def check_state(state: dict, expected: dict) -> None:
    """Raise ConfigError when a saved position belongs to another stream configuration."""
    for key, value in expected.items():
        if state.get(key) != value:
            raise ConfigError(
                f"cannot resume: the saved data position has {key}={state.get(key)!r} but this "
                f"stream has {key}={value!r}"
            )
