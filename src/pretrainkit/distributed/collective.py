"""The few collective operations the training loop needs; all are no-ops in one process."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from pretrainkit.fileio import atomic_directory


def active() -> bool:
    """True inside a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    """Wait for every process (nothing to wait for in one process)."""
    if active():
        dist.barrier()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """The element-wise sum over processes of a 1-d tensor (gloo has no average op)."""
    if active():
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def gather_objects(value: Any) -> list[Any]:
    """Every process's ``value`` (picklable), in rank order, on every process."""
    if not active():
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast_object(value: Any) -> Any:
    """Rank 0's ``value`` (picklable), on every process; the others pass anything (None)."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@contextlib.contextmanager
def shared_atomic_directory(target: Path, fsync: bool = False) -> Iterator[Path]:
    """``fileio.atomic_directory`` that every process writes into, published once by rank 0.

    Rank 0 creates the temporary folder and tells the others its name; after everyone has
    written (a barrier), rank 0 flushes and renames it. All processes must enter together.
    """
    if not active():
        with atomic_directory(target, fsync=fsync) as tmp:
            yield tmp
        return
    if dist.get_rank() == 0:
        with atomic_directory(target, fsync=fsync) as tmp:
            dist.broadcast_object_list([os.fspath(tmp)], src=0)
            yield tmp
            dist.barrier()  # everyone has written their part
        dist.barrier()  # published: nobody moves on before the folder has its final name
    else:
        name: list[Any] = [None]
        dist.broadcast_object_list(name, src=0)
        yield Path(name[0])
        dist.barrier()
        dist.barrier()
