"""The one typed config of the training loop, validated when it is built."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

from pretrainkit.errors import ConfigError, closest

SCHEDULERS = ("constant", "linear", "cosine", "inverse_sqrt", "polynomial")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def _choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        hint = closest(value, choices) if isinstance(value, str) else ""
        raise ConfigError(f"unknown {name} {value!r}{hint}; valid choices: {', '.join(choices)}")


def _is_int(value: object) -> bool:
    # bool is an int subclass; `steps: true` in a YAML file is a mistake, not 1.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)  # type: ignore[arg-type]


@dataclass
class TrainConfig:
    """How to train: steps, optimizer, schedule, precision, checkpoints and logging.

    Every field is checked in ``__post_init__``; a bad value raises ``ConfigError`` naming the
    field, the value and what is allowed.
    """

    steps: int
    """Number of optimizer steps (each consumes ``accumulate`` batches)."""
    lr: float = 1e-4
    """Peak learning rate, reached at the end of the warmup."""
    warmup: int = 0
    """Steps of linear warmup from lr/warmup up to lr."""
    scheduler: str = "linear"
    """Decay after warmup: constant, linear, cosine, inverse_sqrt or polynomial."""
    power: float = 1.0
    """Exponent of the polynomial decay to 0 (1.0 is linear)."""
    weight_decay: float = 0.01
    """AdamW decoupled weight decay; never applied to biases and norm weights."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW moment coefficients."""
    eps: float = 1e-8
    """AdamW denominator epsilon."""
    accumulate: int = 1
    """Micro-batches whose gradients are summed per optimizer step."""
    clip_grad: float | None = 1.0
    """Clip the global gradient L2 norm to this value; None disables clipping."""
    precision: str = "auto"
    """auto, fp32, bf16 (autocast, fp32 master weights) or fp16 (CUDA only, loss scaling)."""
    device: str = "auto"
    """Device to train on: auto (cuda when available, else cpu), cpu, cuda, cuda:N."""
    save_every: int = 0
    """Write a checkpoint every N steps; 0 writes one only at the end."""
    keep_last: int = 2
    """Number of most recent checkpoints kept on disk."""
    eval_every: int = 0
    """Call the evaluate callback every N steps (and at the end); 0 only at the end."""
    log_every: int = 10
    """Write one metrics record every N steps (and at the last step)."""
    seed: int = 42
    """Seed of torch, numpy and python random at the start of a fresh run."""
    skip_nonfinite: bool = False
    """Skip (and count) steps whose loss or gradient norm is NaN/inf instead of stopping."""
    progress: bool = True
    """Show a progress bar with loss, lr, tokens/s and ETA."""

    def __post_init__(self) -> None:
        if not _is_int(self.steps) or self.steps <= 0:
            raise ConfigError(f"steps must be a positive integer, got {self.steps!r}")
        if not _is_number(self.lr) or self.lr <= 0:
            raise ConfigError(f"lr must be a positive finite number, got {self.lr!r}")
        if not _is_int(self.warmup) or self.warmup < 0:
            raise ConfigError(f"warmup must be an integer >= 0 (steps), got {self.warmup!r}")
        if self.warmup > self.steps:
            raise ConfigError(f"warmup ({self.warmup}) is longer than steps ({self.steps})")
        _choice("scheduler", self.scheduler, SCHEDULERS)
        if not _is_number(self.power) or self.power <= 0:
            raise ConfigError(f"power must be a positive number, got {self.power!r}")
        if not _is_number(self.weight_decay) or self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        betas = tuple(self.betas) if isinstance(self.betas, (list, tuple)) else None
        if betas is None or len(betas) != 2 or not all(_is_number(b) and 0 <= b < 1 for b in betas):
            raise ConfigError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        self.betas = (float(betas[0]), float(betas[1]))
        if not _is_number(self.eps) or self.eps <= 0:
            raise ConfigError(f"eps must be a positive number, got {self.eps!r}")
        if not _is_int(self.accumulate) or self.accumulate < 1:
            raise ConfigError(f"accumulate must be an integer >= 1, got {self.accumulate!r}")
        if self.clip_grad is not None and (not _is_number(self.clip_grad) or self.clip_grad <= 0):
            raise ConfigError(
                f"clip_grad must be a positive number or None (no clipping), got {self.clip_grad!r}"
            )
        _choice("precision", self.precision, PRECISIONS)
        self._check_device()
        from pretrainkit.training.precision import resolve_precision

        resolve_precision(self.precision, self.resolved_device())  # fp16 on CPU fails here, early
        for name, minimum in (("save_every", 0), ("keep_last", 1), ("eval_every", 0)):
            value = getattr(self, name)
            if not _is_int(value) or value < minimum:
                raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
        if not _is_int(self.log_every) or self.log_every < 1:
            raise ConfigError(f"log_every must be an integer >= 1, got {self.log_every!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {self.seed!r}")
        for name in ("skip_nonfinite", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")

    def _check_device(self) -> None:
        if self.device == "auto":
            return
        try:
            kind = torch.device(self.device).type
        except (RuntimeError, TypeError):
            kind = None
        if kind not in ("cpu", "cuda"):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if kind == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {self.device!r}: no CUDA device is available here")

    def resolved_device(self) -> torch.device:
        """The device to train on, with ``auto`` resolved to cuda when available."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    @classmethod
    def field_names(cls) -> list[str]:
        """Names of all fields, for building a CLI or validating keys of a config file."""
        return [f.name for f in fields(cls)]
