"""One entry point from a plain model to a (possibly) distributed one, plus rank queries."""

from __future__ import annotations

import os

import torch.distributed as dist
from torch import nn

from pretrainkit.errors import ConfigError, closest

STRATEGIES = ("single", "ddp", "fsdp", "deepspeed")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer") from None


def rank() -> int:
    """This process's global rank: from torch.distributed when initialised, else ``$RANK``, else 0."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return _env_int("RANK", 0)


def world_size() -> int:
    """Number of processes: from torch.distributed when initialised, else ``$WORLD_SIZE``, else 1."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return _env_int("WORLD_SIZE", 1)


def is_main_process() -> bool:
    """True on rank 0, the process that logs, writes metrics and saves checkpoints."""
    return rank() == 0


def check_strategy(strategy: str) -> None:
    """Fail early, before any output is written, on a strategy that cannot run here."""
    if strategy not in STRATEGIES:
        raise ConfigError(
            f"unknown strategy {strategy!r}{closest(strategy, STRATEGIES)}; "
            f"valid choices: {', '.join(STRATEGIES)}"
        )
    if strategy != "single":
        raise ConfigError(
            f"strategy {strategy!r} is not implemented yet: ddp, fsdp and deepspeed come with the "
            "scale-out work; use strategy 'single' for now"
        )
    if world_size() > 1:
        raise ConfigError(
            f"strategy 'single' was launched with {world_size()} processes; "
            "use one process, or a distributed strategy (ddp, fsdp, deepspeed)"
        )


def parallelize(model: nn.Module, strategy: str = "single") -> nn.Module:
    """Wrap ``model`` for the given distribution strategy.

    Args:
        model: The model, already on its device.
        strategy: ``single`` (one process), or ``ddp`` / ``fsdp`` / ``deepspeed`` (scale-out).

    Returns:
        The module the training loop calls; for ``single`` it is ``model`` itself.

    Raises:
        ConfigError: Unknown strategy, or ``single`` launched with several processes (each
            would train its own copy and only rank 0 would save).
            A scale-out strategy is refused the same way until the scale-out work lands.
    """
    check_strategy(strategy)
    return model
