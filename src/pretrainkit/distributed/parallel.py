"""One entry point from a plain model to a (possibly) distributed one, plus rank queries."""

from __future__ import annotations

import atexit
import contextlib
import datetime
import gc
import logging
import os
from dataclasses import asdict
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from pretrainkit.distributed.config import (
    ParallelConfig,
    resolve_batch_size,
    resolve_microbatches,
)
from pretrainkit.distributed.engines import DDPEngine, Engine, FSDPEngine, transformer_layers
from pretrainkit.errors import ConfigError

logger = logging.getLogger(__name__)


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


def as_parallel(strategy: str | ParallelConfig) -> ParallelConfig:
    """A strategy name or a full ``ParallelConfig``, as a validated ``ParallelConfig``."""
    return strategy if isinstance(strategy, ParallelConfig) else ParallelConfig(strategy=strategy)


def check_strategy(
    strategy: str | ParallelConfig, device: torch.device | None = None
) -> ParallelConfig:
    """Fail early, before any output is written, on a strategy that cannot run here.

    Args:
        strategy: A strategy name or its full options.
        device: The training device, when known (CPU offload needs a GPU to offload from).

    Returns:
        The validated options.

    Raises:
        ConfigError: Unknown strategy or option (see ``ParallelConfig``), ``single`` launched
            with several processes, or CPU offload of a model that is already on the CPU.
    """
    parallel = as_parallel(strategy)
    tp, world = parallel.tensor_parallel, world_size()
    pp = parallel.pipeline_parallel
    if tp > 1 and pp > 1:
        _check_tensor_times_pipeline(parallel, world)
    elif pp > 1 and parallel.strategy == "single" and world != pp:
        raise ConfigError(
            f"pipeline_parallel {pp} with strategy 'single' needs exactly {pp} processes "
            f"(launched with {world}), one per stage; add data parallelism over several "
            "pipelines with --strategy ddp or fsdp"
        )
    elif pp > 1 and world % pp:
        raise ConfigError(
            f"pipeline_parallel {pp} does not divide the {world} process(es): each process "
            f"holds one of the {pp} stages of a pipeline; launch a multiple of {pp}"
        )
    elif tp > 1 and parallel.strategy == "single" and world != tp:
        raise ConfigError(
            f"tensor_parallel {tp} with strategy 'single' needs exactly {tp} processes "
            f"(launched with {world}): launch with torchrun --nproc-per-node {tp}, or add data "
            "parallelism over more processes with --strategy fsdp"
        )
    elif tp > 1 and world % tp:
        raise ConfigError(
            f"tensor_parallel {tp} does not divide the {world} process(es): the processes "
            f"form groups of {tp} that each hold one model; launch a multiple of {tp}"
        )
    if parallel.strategy == "single" and world > 1 and parallel.model_parallel == 1:
        raise ConfigError(
            f"strategy 'single' was launched with {world_size()} processes; each would train "
            "its own copy. Use one process, or --strategy ddp, fsdp or deepspeed"
        )
    if parallel.cpu_offload and device is not None and device.type != "cuda":
        raise ConfigError(
            f"cpu_offload moves shards from GPU to CPU memory, but the device is {device.type!r}: "
            "the model is in CPU memory already; drop --cpu-offload"
        )
    return parallel


def _check_tensor_times_pipeline(parallel: ParallelConfig, world: int) -> None:
    """The process count of a tensor × pipeline layout: each pipeline is pp stages of tp
    processes, and ``ddp`` runs several such pipelines (world = dp × pp × tp)."""
    tp, pp = parallel.tensor_parallel, parallel.pipeline_parallel
    per_model = tp * pp
    layout = f"tensor_parallel {tp} × pipeline_parallel {pp}"
    if parallel.strategy == "single" and world != per_model:
        raise ConfigError(
            f"{layout} with strategy 'single' needs exactly {per_model} processes (launched "
            f"with {world}): {pp} stages of {tp} processes each; launch with torchrun "
            f"--nproc-per-node {per_model}, or add data parallelism over several pipelines "
            "with --strategy ddp or fsdp (a multiple of it)"
        )
    if world % per_model:
        raise ConfigError(
            f"{layout} = {per_model} processes per model does not divide the {world} "
            f"process(es): the world size must be data-parallel × {pp} × {tp}; launch a "
            f"multiple of {per_model}"
        )


def data_parallel_size(strategy: str | ParallelConfig) -> int:
    """How many processes read different data: all of them, divided by the model-parallel
    size (the processes of one tensor-parallel group, or the stages of one pipeline, compute
    on the same batch)."""
    return max(1, world_size() // as_parallel(strategy).model_parallel)


def data_parallel_rank(strategy: str | ParallelConfig) -> int:
    """This process's index among the ``data_parallel_size`` data readers.

    The process mesh is ``("dp", "tp")``, row-major as ``init_device_mesh`` lays it out:
    global rank = dp × tensor_parallel + tp; a pipeline's stages are consecutive ranks too, and
    under tensor × pipeline parallelism the mesh is ``("dp", "pp", "tp")``: global rank =
    (dp × pipeline_parallel + stage) × tensor_parallel + tp.
    """
    return rank() // as_parallel(strategy).model_parallel


def check_model(strategy: str | ParallelConfig, model: nn.Module) -> None:
    """The checks that need the built model (before anything is written): with tensor
    parallelism, heads and FFN width divisible by it, and every layer of a known type; with
    pipeline parallelism, a layer stack the stages can split."""
    parallel = as_parallel(strategy)
    if parallel.tensor_parallel > 1:
        from pretrainkit.distributed.tensor_parallel import check_tensor_parallel

        check_tensor_parallel(model, parallel.tensor_parallel, parallel.sequence_parallel)
    if parallel.pipeline_parallel > 1:
        from pretrainkit.distributed.pipeline_plan import check_pipeline

        check_pipeline(model, parallel.pipeline_parallel, parallel.virtual_stages)


def check_run(
    strategy: str | ParallelConfig,
    train,
    batch_size: int | None,
    global_batch_size: int | None = None,
    pipeline: bool = False,
) -> tuple[ParallelConfig, int]:
    """Every check a training command makes before it writes anything.

    Args:
        strategy: A strategy name or its full options.
        train: The ``TrainConfig`` (device, precision, accumulation).
        batch_size: Sequences per micro-batch and process, or None.
        global_batch_size: Sequences per optimizer step over all processes, or None.
        pipeline: The command trains through a pipeline when asked (``pretrain``); the
            others refuse ``pipeline_parallel`` > 1.

    Returns:
        The validated options and the micro-batch size of each process.
    """
    from pretrainkit.training.precision import resolve_precision

    device = train.resolved_device()
    parallel = check_strategy(strategy, device)
    precision = resolve_precision(train.precision, device)
    if parallel.strategy == "deepspeed" and precision == "fp16":
        raise ConfigError(
            "precision 'fp16' is not supported with strategy 'deepspeed' here (DeepSpeed would "
            "own the loss scaling); use --precision bf16 or fp32"
        )
    pp = parallel.pipeline_parallel
    if pp > 1 and not pipeline:
        raise ConfigError(
            f"pipeline_parallel {pp}: only pretrain trains through a pipeline so far; run this "
            "command with pipeline_parallel 1 (the model a pipeline run writes loads anywhere)"
        )
    if pp > 1 and precision == "fp16":
        raise ConfigError(
            "precision 'fp16' is not supported with pipeline_parallel (each stage would skip "
            "overflowing steps on its own loss scale); use --precision bf16 or fp32"
        )
    micro = resolve_batch_size(
        batch_size, global_batch_size, train.accumulate, data_parallel_size(parallel)
    )
    resolve_microbatches(parallel, micro)  # the pipeline's micro-batches divide the batch
    return parallel, micro


def batch_plan(parallel: ParallelConfig, batch_size: int, accumulate: int) -> dict[str, Any]:
    """What a run records (run.json) about its distribution and effective batch."""
    readers = data_parallel_size(parallel)
    plan = {
        "strategy": asdict(parallel),
        "world_size": world_size(),
        "data_parallel_size": readers,
        "batch_size": batch_size,
        "accumulate": accumulate,
        "global_batch_size": batch_size * accumulate * readers,
    }
    if parallel.pipeline_parallel > 1:
        plan["microbatches"] = resolve_microbatches(parallel, batch_size)
    return plan


def local_device(device: torch.device) -> torch.device:
    """This process's device: ``cuda`` becomes ``cuda:$LOCAL_RANK`` under a launcher."""
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", _env_int("LOCAL_RANK", 0))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def init_process_group(device: torch.device) -> None:
    """Join the process group torchrun describes (``$RANK``, ``$WORLD_SIZE``, ``$MASTER_ADDR``…).

    NCCL on GPUs, gloo on CPUs. Started without a launcher (one process) the group is local,
    so DDP, FSDP and DeepSpeed also run in a single process.
    """
    if dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = datetime.timedelta(minutes=_env_int("PRETRAINKIT_DIST_TIMEOUT_MIN", 30))
    if "MASTER_ADDR" in os.environ:
        dist.init_process_group(backend, timeout=timeout)
    else:
        dist.init_process_group(
            backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout
        )
    atexit.register(_shutdown)
    logger.info("process group: %s, rank %d of %d", backend, dist.get_rank(), dist.get_world_size())


def _shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def shutdown(clean: bool = True) -> None:
    """Leave the process group while the interpreter is fully alive; a no-op without one.

    gloo's worker threads may still hold finished work objects (and their tensors) from the
    engines' last collectives; torn down during interpreter finalisation they abort the process
    ("terminate called without an active exception"), now and then, under load. So commands
    free those objects, meet (``clean``: every process finished) and destroy the group before
    returning; the atexit hook stays as a fallback.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    gc.collect()  # engines keep reference cycles; their pending work must go first
    if clean:
        dist.barrier()
    dist.destroy_process_group()


def init_device(strategy: str | ParallelConfig) -> contextlib.AbstractContextManager:
    """Where to build the model: the meta device (no memory) on FSDP, tensor- and
    pipeline-parallel ranks other than 0.

    FSDP, TP and PP materialise each process's part and copy rank 0's weights into it, so only
    one process ever holds the whole model, and that in CPU memory.
    """
    parallel = as_parallel(strategy)
    if (parallel.strategy == "fsdp" or parallel.model_parallel > 1) and rank() != 0:
        return torch.device("meta")
    return contextlib.nullcontext()


def checkpoint_layers(model: nn.Module) -> None:
    """Recompute each transformer layer's activations during backward (no stored activations).

    Uses the composable ``checkpoint``, which keeps parameter names unchanged (no wrapper
    module), so checkpoints and sharding see the same model.
    """
    from torch.distributed._composable import checkpoint

    layers = transformer_layers(model)
    if not layers:
        raise ConfigError(
            "activation_checkpointing needs a model with encoder.layers or decoder.layers; "
            f"{type(model).__name__} has neither"
        )
    for layer in layers:
        checkpoint(layer)


def parallelize(
    model: nn.Module,
    strategy: str | ParallelConfig = "single",
    config=None,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    micro_batch: int = 1,
) -> Engine:
    """Wrap ``model`` for the given distribution strategy: the one backend-specific call.

    Args:
        model: The model (possibly on the meta device on FSDP ranks other than 0).
        strategy: ``single``, ``ddp``, ``fsdp``, ``deepspeed``, or a ``ParallelConfig`` with
            the ZeRO stage, CPU offload and activation checkpointing.
        config: The ``TrainConfig`` (optimizer, clipping, accumulation); defaults to one step.
        device: The training device (``cuda`` means this process's GPU).
        precision: The resolved precision: fp32, bf16 or fp16.
        micro_batch: Sequences per micro-batch on each process (DeepSpeed checks its batch;
            a pipeline cuts it into its micro-batches).

    Returns:
        The ``Engine``: ``.forward_backward`` runs a micro-batch, ``.module`` is the
        (wrapped) model it calls, ``.model`` the plain model (under pipeline parallelism, this
        process's stage of it), ``.optimizer`` the optimizer whose learning rate the schedule
        drives.

    Raises:
        ConfigError: See ``check_strategy``.
    """
    from pretrainkit.training.config import TrainConfig

    device = local_device(torch.device(device))
    parallel = check_strategy(strategy, device)
    config = config if config is not None else TrainConfig(steps=1, device=str(device))
    if parallel.checkpoint_format == "sharded":
        from pretrainkit.distributed.sharded_checkpoint import check_shardable

        check_shardable(model)
    if parallel.activation_checkpointing:
        checkpoint_layers(model)
    engine = _engine(model, parallel, config, device, precision, micro_batch)
    engine.trust_checkpoint = parallel.trust_checkpoint
    engine.checkpoint_format = parallel.checkpoint_format
    return engine


def _engine(
    model: nn.Module,
    parallel: ParallelConfig,
    config,
    device: torch.device,
    precision: str,
    micro_batch: int,
) -> Engine:
    if not parallel.distributed:
        return Engine(model, config, device, precision)
    init_process_group(device)
    if parallel.pipeline_parallel > 1:
        from pretrainkit.distributed.pipeline import PipelineEngine

        check_model(parallel, model)
        return PipelineEngine(model, config, device, precision, parallel, micro_batch)
    mesh = None
    if parallel.tensor_parallel > 1:
        check_model(parallel, model)
        from torch.distributed.device_mesh import init_device_mesh

        tp = parallel.tensor_parallel
        mesh = init_device_mesh(
            device.type, (dist.get_world_size() // tp, tp), mesh_dim_names=("dp", "tp")
        )
    if parallel.strategy == "single":  # tensor parallelism alone
        return Engine(model, config, device, precision, mesh, parallel.sequence_parallel)
    if parallel.strategy == "ddp":
        return DDPEngine(model, config, device, precision)
    if parallel.strategy == "fsdp":
        return FSDPEngine(
            model, config, device, precision, parallel.cpu_offload, mesh, parallel.sequence_parallel
        )
    from pretrainkit.distributed.zero import DeepSpeedEngine

    return DeepSpeedEngine(
        model, config, device, precision, micro_batch, parallel.stage, parallel.cpu_offload
    )
