"""Where the model meets the process group: ``parallelize`` and the rank helpers.

The training loop calls ``parallelize`` once and otherwise never asks which backend is used.
"""

from pretrainkit.distributed.parallel import (
    STRATEGIES,
    check_strategy,
    is_main_process,
    parallelize,
    rank,
    world_size,
)

__all__ = ["STRATEGIES", "check_strategy", "is_main_process", "parallelize", "rank", "world_size"]
