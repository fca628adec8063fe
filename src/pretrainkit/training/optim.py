"""AdamW with the usual no-decay groups, and learning-rate schedules with linear warmup."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from pretrainkit.errors import ConfigError
from pretrainkit.training.config import SCHEDULERS, TrainConfig

logger = logging.getLogger(__name__)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split trainable parameters into a decayed group and a no-decay group.

    Biases and norm weights (every parameter with fewer than 2 dimensions) are not decayed:
    pulling a LayerNorm gain towards 0 only fights the normalisation.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    # The training contract says which parameters to update (a recipe may train only part of
    # its modules); an engine's wrapper (DDP, FSDP) exposes the plain parameters instead.
    chosen = getattr(model, "trainable_parameters", None)
    params = chosen() if callable(chosen) else model.parameters()
    for param in params:
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    if not decay and not no_decay:
        raise ConfigError("the model has no trainable parameters")
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return [group for group in groups if group["params"]]


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the model's trainable parameters, fused when the device supports it.

    The fused kernel does the whole update in one pass (CPU and CUDA in recent torch); where it
    is unavailable (an unusual device or dtype) the multi-tensor ``foreach`` path is used.
    """

    def adamw(**backend: bool) -> torch.optim.AdamW:
        groups = parameter_groups(model, config.weight_decay)
        return torch.optim.AdamW(
            groups, lr=config.lr, betas=config.betas, eps=config.eps, **backend
        )

    try:
        return adamw(fused=True)
    except (RuntimeError, ValueError) as error:
        logger.info("fused AdamW unavailable (%s); using foreach", error)
        return adamw(foreach=True)


def schedule(name: str, steps: int, warmup: int = 0, power: float = 1.0) -> Callable[[int], float]:
    """The learning-rate multiplier as a function of completed optimizer steps.

    ``factor(s)`` scales the peak lr for update number ``s + 1``. During warmup it rises
    linearly: ``(s + 1) / warmup``, so the first update already moves the weights. After it,
    with ``p = (s - warmup) / (steps - warmup)``:

    - constant: 1
    - linear: ``1 - p``
    - cosine: ``(1 + cos(pi * p)) / 2``
    - polynomial: ``(1 - p) ** power``
    - inverse_sqrt: ``sqrt(max(warmup, 1) / (s + 1))`` (continuous with the warmup)

    Args:
        name: One of ``SCHEDULERS``.
        steps: Total optimizer steps.
        warmup: Warmup steps.
        power: Exponent of the polynomial decay.
    """
    if name not in SCHEDULERS:
        raise ConfigError(f"unknown scheduler {name!r}; valid choices: {', '.join(SCHEDULERS)}")
    decay_steps = max(1, steps - warmup)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if name == "inverse_sqrt":
            return math.sqrt(max(warmup, 1) / (step + 1))
        progress = min(1.0, (step - warmup) / decay_steps)
        if name == "constant":
            return 1.0
        if name == "linear":
            return 1.0 - progress
        if name == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return (1.0 - progress) ** power

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> LambdaLR:
    """A ``LambdaLR`` following ``schedule(config.scheduler, ...)``; step it once per update."""
    factor = schedule(config.scheduler, config.steps, config.warmup, config.power)
    return LambdaLR(optimizer, factor)
