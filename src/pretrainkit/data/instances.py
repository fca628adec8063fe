"""The `InstanceStream` interface and the seeded per-epoch order every stream shares."""

from __future__ import annotations

import abc
from collections.abc import Iterator
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
    ranks see disjoint items. Only the permutation of the current epoch is held in memory.
    """

    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} must be in [0, world_size={world_size})")
        self.size, self.seed, self.rank, self.world_size = size, seed, rank, world_size
        self.slots = len(range(rank, size, world_size))  # slots of this rank per epoch
        self.epoch = 0
        self.cursor = 0
        self._permutation: tuple[int, np.ndarray] | None = None

    def current(self) -> tuple[int, int, int]:
        """`(epoch, slot, item)` at the cursor; `slot` numbers positions within the epoch."""
        if self.cursor >= self.slots:
            self.epoch, self.cursor = self.epoch + 1, 0
        if self._permutation is None or self._permutation[0] != self.epoch:
            rng = np.random.default_rng([self.seed, self.epoch])
            self._permutation = (self.epoch, rng.permutation(self.size))
        slot = self.rank + self.cursor * self.world_size
        return self.epoch, slot, int(self._permutation[1][slot])

    def advance(self) -> None:
        self.cursor += 1

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])


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
