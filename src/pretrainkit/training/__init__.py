"""The training loop and what it is made of: config, optimizer, precision, checkpoints, logs.

Names are imported on first use (``pretrainkit.lazy``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pretrainkit.lazy import lazy_exports

_EXPORTS = {
    "PRECISIONS": "pretrainkit.training.config",
    "SCHEDULERS": "pretrainkit.training.config",
    "TrainConfig": "pretrainkit.training.config",
    "Trainer": "pretrainkit.training.trainer",
    "cpu_flags": "pretrainkit.training.precision",
    "resolve_precision": "pretrainkit.training.precision",
    "plot_run": "pretrainkit.training.plot",
}

if TYPE_CHECKING:
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

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
