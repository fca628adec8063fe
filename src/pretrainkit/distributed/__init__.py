"""Where the model meets the process group: ``parallelize`` and the rank helpers.

The training loop calls ``parallelize`` once and afterwards talks only to the ``Engine`` it
returns, never asking which backend is used.

Names are imported on first use (``pretrainkit.lazy``): the command-line parser reads
``ParallelConfig`` without importing torch.distributed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pretrainkit.lazy import lazy_exports

_EXPORTS = {
    "all_reduce_sum": "pretrainkit.distributed.collective",
    "barrier": "pretrainkit.distributed.collective",
    "broadcast_object": "pretrainkit.distributed.collective",
    "gather_objects": "pretrainkit.distributed.collective",
    "STRATEGIES": "pretrainkit.distributed.config",
    "ParallelConfig": "pretrainkit.distributed.config",
    "deepspeed_installed": "pretrainkit.distributed.config",
    "resolve_batch_size": "pretrainkit.distributed.config",
    "Engine": "pretrainkit.distributed.engines",
    "batch_plan": "pretrainkit.distributed.parallel",
    "check_model": "pretrainkit.distributed.parallel",
    "check_run": "pretrainkit.distributed.parallel",
    "data_parallel_rank": "pretrainkit.distributed.parallel",
    "data_parallel_size": "pretrainkit.distributed.parallel",
    "check_strategy": "pretrainkit.distributed.parallel",
    "init_device": "pretrainkit.distributed.parallel",
    "is_main_process": "pretrainkit.distributed.parallel",
    "parallelize": "pretrainkit.distributed.parallel",
    "rank": "pretrainkit.distributed.parallel",
    "world_size": "pretrainkit.distributed.parallel",
}

if TYPE_CHECKING:
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
        check_model,
        check_run,
        check_strategy,
        data_parallel_rank,
        data_parallel_size,
        init_device,
        is_main_process,
        parallelize,
        rank,
        world_size,
    )

__all__ = [
    "Engine",
    "ParallelConfig",
    "STRATEGIES",
    "all_reduce_sum",
    "barrier",
    "batch_plan",
    "broadcast_object",
    "check_model",
    "check_run",
    "check_strategy",
    "data_parallel_rank",
    "data_parallel_size",
    "deepspeed_installed",
    "gather_objects",
    "init_device",
    "is_main_process",
    "parallelize",
    "rank",
    "resolve_batch_size",
    "world_size",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
