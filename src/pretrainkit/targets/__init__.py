"""Target slot: head + loss + metrics. A downstream task is the same model with another target."""

from pretrainkit.targets import (  # noqa: F401  (register)
    classification,
    language_model,
    regression,
    sentence_pair,
    token_tasks,
)
from pretrainkit.targets.base import TARGETS, Target, TargetOutput

__all__ = ["TARGETS", "Target", "TargetOutput"]
