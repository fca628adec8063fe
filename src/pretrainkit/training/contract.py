"""What the training loop needs of a model: the contract ``Model`` implements and that recipes
wrapping models (a teacher and a student, a model with adapters) implement too."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from pretrainkit.errors import ConfigError

# The methods the loop calls (besides nn.Module's), checked when a Trainer is built.
REQUIRED = (
    "forward",
    "save",
    "load_weights",
    "trainable_parameters",
    "train",
    "eval",
    "state_dict",
)


@runtime_checkable
class TrainableModel(Protocol):
    """A model the Trainer can train, checkpoint and resume.

    - ``forward(**batch)`` returns an object with ``.loss`` (a scalar tensor when the batch has
      labels) and ``.metrics`` (``{name: scalar tensor}``), as ``ModelOutput`` does;
    - ``save(directory, state_dict=None, overwrite=False)`` writes a folder ``load`` reads back
      (``state_dict``: full weights gathered from a sharded model);
    - ``load_weights(directory)`` loads the weights ``save`` wrote, strictly;
    - ``trainable_parameters()`` yields the parameters the optimizer updates (all of them for a
      plain model; only the adapters, or only the student, for a recipe);
    - ``train(mode)`` / ``eval()`` switch dropout and the like; ``state_dict()`` for engines.
    """

    def forward(self, **batch: Any) -> Any: ...

    def save(
        self,
        directory: str | os.PathLike,
        state_dict: dict[str, torch.Tensor] | None = None,
        overwrite: bool = False,
    ) -> Path: ...

    def load_weights(self, directory: str | os.PathLike) -> None: ...

    def trainable_parameters(self) -> Iterator[torch.nn.Parameter]: ...

    def train(self, mode: bool = True) -> Any: ...

    def eval(self) -> Any: ...

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]: ...


def check_trainable(model: object) -> None:
    """A ConfigError naming what ``model`` lacks of the contract, before anything runs."""
    missing = [name for name in REQUIRED if not callable(getattr(model, name, None))]
    if missing:
        raise ConfigError(
            f"{type(model).__name__} cannot be trained here: it lacks {', '.join(missing)} "
            "(see pretrainkit.training.contract.TrainableModel)"
        )
