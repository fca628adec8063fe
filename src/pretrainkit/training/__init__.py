"""The training loop and what it is made of: config, optimizer, precision, checkpoints, logs."""

from pretrainkit.training.config import PRECISIONS, SCHEDULERS, TrainConfig
from pretrainkit.training.plot import plot_run
from pretrainkit.training.precision import cpu_flags, resolve_precision
from pretrainkit.training.trainer import Trainer

__all__ = [
    "PRECISIONS",
    "SCHEDULERS",
    "TrainConfig",
    "Trainer",
    "cpu_flags",
    "plot_run",
    "resolve_precision",
]
