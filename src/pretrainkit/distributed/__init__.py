"""Where the model meets the process group: ``parallelize`` and the rank helpers.

The training loop calls ``parallelize`` once and afterwards talks only to the ``Engine`` it
returns, never asking which backend is used.
"""

from pretrainkit.distributed.collective import (
    all_reduce_sum,
    barrier,
    broadcast_object,
    gather_objects,
)
from pretrainkit.distributed.config import (
    STRATEGIES,
    ParallelConfig,
    deepspeed_installed,
    resolve_batch_size,
)
from pretrainkit.distributed.engines import Engine
from pretrainkit.distributed.parallel import (
    batch_plan,
    check_run,
    check_strategy,
    init_device,
    is_main_process,
    parallelize,
    rank,
    world_size,
)

__all__ = [
    "STRATEGIES",
    "Engine",
    "ParallelConfig",
    "all_reduce_sum",
    "barrier",
    "batch_plan",
    "broadcast_object",
    "check_run",
    "check_strategy",
    "deepspeed_installed",
    "gather_objects",
    "init_device",
    "is_main_process",
    "parallelize",
    "rank",
    "resolve_batch_size",
    "world_size",
]
