"""How to spread training over processes: the typed strategy options and the batch arithmetic."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, fields

from pretrainkit.errors import ConfigError, closest

STRATEGIES = ("single", "ddp", "fsdp", "deepspeed")
ZERO_STAGES = (1, 2, 3)
DEFAULT_ZERO_STAGE = 2
PIPELINE_SCHEDULES = ("gpipe", "1f1b", "interleaved")
DEFAULT_STAGES_PER_PROCESS = 2
DEFAULT_PIPELINE_SCHEDULE = "1f1b"
PIPELINE_SPLITS = ("params", "time")
DEFAULT_PIPELINE_SPLIT = "params"
CHECKPOINT_FORMATS = ("full", "sharded")


def deepspeed_installed() -> bool:
    """True when ``import deepspeed`` would find the package (without paying for the import)."""
    return importlib.util.find_spec("deepspeed") is not None


@dataclass
class ParallelConfig:
    """Which engine trains the model, and its options. Checked when built.

    A bad value raises ``ConfigError`` naming the option and what it accepts; options that do
    not apply to the chosen strategy are errors, never silently ignored.
    """

    strategy: str = "single"
    """single (one process), ddp, fsdp (FSDP2 fully_shard) or deepspeed (ZeRO); launch the
    distributed ones with torchrun."""
    zero_stage: int | None = None
    """DeepSpeed ZeRO stage: 1 shards optimizer states, 2 also gradients, 3 also parameters
    (default 2); deepspeed only."""
    cpu_offload: bool = False
    """Keep sharded parameters/optimizer states in CPU memory between uses (fsdp, deepspeed;
    needs a CUDA device)."""
    activation_checkpointing: bool = False
    """Recompute each transformer layer's activations in the backward pass instead of storing
    them (less memory, about a third more compute)."""
    tensor_parallel: int = 1
    """Split every transformer layer (attention heads, FFN width) over this many processes;
    the processes are then tensor_parallel × data-parallel, the data split over the latter.
    Alone (strategy single) or with strategy fsdp; must divide the heads and the FFN width."""
    sequence_parallel: bool = False
    """With tensor_parallel > 1: also split the norms' and dropouts' activations along the
    sequence (each process holds 1/tensor_parallel of the positions between the attention and
    feed-forward sub-layers, whose inputs are gathered): less activation memory for about the
    same communication. With pipeline_parallel too: each stage splits the sequence as its
    stack begins and sends the whole hidden states on."""
    pipeline_parallel: int = 1
    """Split the encoder's layer stack into this many consecutive stages, one per process
    (torch.distributed.pipelining): the first also embeds, the last also computes the targets.
    Alone (strategy single, exactly this many processes) or over several pipelines (a multiple
    of it) with strategy ddp (each stage's gradients averaged over the pipelines) or fsdp
    (each stage's parameters, gradients and optimizer state sharded over them); with
    tensor_parallel N each stage is N processes (then pipeline_parallel × N per pipeline).
    pretrain only."""
    pipeline_schedule: str | None = None
    """How the micro-batches flow through the stages: 1f1b (one forward, one backward in the
    steady state; at most pipeline_parallel micro-batches' activations held) or gpipe (all
    forwards, then all backwards) or interleaved (interleaved 1F1B: each process holds
    stages_per_process non-adjacent stages, which shrinks the bubble by that factor for as
    much more point-to-point traffic). Default 1f1b; with pipeline_parallel > 1 only."""
    stages_per_process: int | None = None
    """With pipeline_schedule interleaved: the stages each process holds (V ≥ 2, default 2);
    the layer stack is cut into pipeline_parallel × V stages, process p holding stages p,
    p + pipeline_parallel, ... Needs at least that many layers."""
    pipeline_split: str | None = None
    """How the layer stack is cut into stages: params (the largest stage's parameter count as
    small as it can be; the embedding and the targets not counted) or time (rank 0 times one
    forward + backward of the embedding, of every layer and of the targets on a micro-batch
    before training, and the cut makes the slowest stage, the first with the embedding and the
    last with the targets, as fast as it can be). Default params; with pipeline_parallel > 1
    only."""
    microbatches: int | None = None
    """Micro-batches each batch is cut into for the pipeline; must divide the per-process batch
    (default: the smallest number ≥ pipeline_parallel that does). With pipeline_parallel > 1
    only."""
    trust_checkpoint: bool = False
    """Resume from checkpoint files that cannot be checked: a checkpoint without manifest.json
    (written by an older pretrainkit) and DeepSpeed's own optimizer files, which DeepSpeed reads
    with pickle and which can therefore run code. Only for run folders you wrote yourself."""
    checkpoint_format: str = "full"
    """How checkpoints hold the weights and optimizer state: full (gathered onto rank 0 into
    model.safetensors and trainer_state.pt; a checkpoint is a model folder) or sharded (every
    process writes its own part through torch.distributed.checkpoint as safetensors, nothing
    gathered; resumes on any layout; `pretrainkit convert --from-checkpoint` makes a model
    folder of one). sharded: strategies single, ddp and fsdp, with or without tensor_parallel
    and pipeline_parallel.
    RUN/model is a full model folder either way."""

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            hint = closest(self.strategy, STRATEGIES) if isinstance(self.strategy, str) else ""
            raise ConfigError(
                f"unknown strategy {self.strategy!r}{hint}; valid choices: {', '.join(STRATEGIES)}"
            )
        for name in (
            "cpu_offload",
            "activation_checkpointing",
            "trust_checkpoint",
            "sequence_parallel",
        ):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.zero_stage is not None:
            if self.strategy != "deepspeed":
                raise ConfigError(
                    f"zero_stage={self.zero_stage} applies to strategy 'deepspeed' only (strategy "
                    f"is {self.strategy!r}); drop --zero-stage or use --strategy deepspeed"
                )
            if self.zero_stage not in ZERO_STAGES or isinstance(self.zero_stage, bool):
                raise ConfigError(f"zero_stage must be 1, 2 or 3, got {self.zero_stage!r}")
        if self.cpu_offload and self.strategy not in ("fsdp", "deepspeed"):
            raise ConfigError(
                f"cpu_offload needs strategy 'fsdp' or 'deepspeed' (strategy is {self.strategy!r}): "
                "only sharding engines can keep their shards in CPU memory"
            )
        self._check_tensor_parallel()
        self._check_pipeline_parallel()
        self._check_checkpoint_format()
        if self.strategy == "deepspeed" and not deepspeed_installed():
            raise ConfigError(
                "strategy 'deepspeed' needs the deepspeed package, which is not installed here; "
                "`pip install deepspeed`, or use strategy 'fsdp' (ZeRO-3-like sharding built into "
                "PyTorch) or 'ddp'"
            )

    def _check_tensor_parallel(self) -> None:
        size = self.tensor_parallel
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ConfigError(f"tensor_parallel must be a positive integer, got {size!r}")
        if self.sequence_parallel and size == 1:
            raise ConfigError(
                "sequence_parallel splits activations over the processes of a tensor-parallel "
                "group, but tensor_parallel is 1; add --tensor-parallel N (N > 1) or drop "
                "--sequence-parallel"
            )
        if size == 1:
            return
        if self.strategy == "ddp" and self.pipeline_parallel == 1:
            raise ConfigError(
                f"tensor_parallel {size} with strategy 'ddp' is not supported: "
                "DistributedDataParallel cannot hold the split (DTensor) parameters tensor "
                "parallelism makes (it fails when wrapping them). Use --strategy fsdp to add "
                "data parallelism (FSDP over the data-parallel processes, TP within each "
                "group), or --strategy single for tensor parallelism alone"
            )
        if self.strategy == "deepspeed":
            raise ConfigError(
                f"tensor_parallel {size} with strategy 'deepspeed' is not supported: DeepSpeed "
                "ZeRO here works on whole (unsplit) parameters. Use --strategy fsdp (or single "
                "for tensor parallelism alone)"
            )

    def _check_pipeline_parallel(self) -> None:
        size = self.pipeline_parallel
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ConfigError(f"pipeline_parallel must be a positive integer, got {size!r}")
        for name in ("pipeline_schedule", "pipeline_split", "stages_per_process", "microbatches"):
            if size == 1 and getattr(self, name) is not None:
                raise ConfigError(
                    f"{name}={getattr(self, name)!r} applies to pipeline parallelism only "
                    "(pipeline_parallel is 1); drop it or set --pipeline-parallel"
                )
        schedule = self.pipeline_schedule
        if schedule is not None and schedule not in PIPELINE_SCHEDULES:
            hint = closest(schedule, PIPELINE_SCHEDULES) if isinstance(schedule, str) else ""
            raise ConfigError(
                f"unknown pipeline_schedule {schedule!r}{hint}; valid choices: "
                f"{', '.join(PIPELINE_SCHEDULES)}"
            )
        split = self.pipeline_split
        if split is not None and split not in PIPELINE_SPLITS:
            hint = closest(split, PIPELINE_SPLITS) if isinstance(split, str) else ""
            raise ConfigError(
                f"unknown pipeline_split {split!r}{hint}; valid choices: "
                f"{', '.join(PIPELINE_SPLITS)}"
            )
        virtual = self.stages_per_process
        if virtual is not None:
            if schedule != "interleaved":
                raise ConfigError(
                    f"stages_per_process={virtual!r} applies to pipeline_schedule "
                    f"'interleaved' only (schedule is {self.schedule!r}); drop it or add "
                    "--pipeline-schedule interleaved"
                )
            if not isinstance(virtual, int) or isinstance(virtual, bool) or virtual < 2:
                raise ConfigError(
                    f"stages_per_process must be an integer ≥ 2, got {virtual!r} (1 is plain "
                    "1f1b: use --pipeline-schedule 1f1b)"
                )
        count = self.microbatches
        if count is not None:
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                raise ConfigError(f"microbatches must be a positive integer, got {count!r}")
            if self.schedule == "interleaved" and count % size:
                raise ConfigError(
                    f"microbatches {count} is not a multiple of the {size} processes of the "
                    "pipeline, which the interleaved schedule needs (it sends the micro-batches "
                    f"round the pipeline {size} at a time); choose a multiple of {size}"
                )
            if self.schedule == "1f1b" and count < size:
                raise ConfigError(
                    f"microbatches {count} is fewer than the {size} pipeline stages, which "
                    "schedule 1f1b needs at least (every stage must hold a micro-batch in its "
                    "steady state); give --microbatches ≥ "
                    f"{size} or --pipeline-schedule gpipe"
                )
        if size == 1:
            return
        if self.strategy == "deepspeed":
            raise ConfigError(
                f"pipeline_parallel {size} with strategy 'deepspeed' is not supported: DeepSpeed "
                "ZeRO wraps the whole model in its own engine, which a pipeline stage cannot "
                f"run under; use --strategy single (one pipeline of exactly {size} processes), "
                "ddp (data parallelism over several pipelines) or fsdp (several pipelines, each "
                "stage sharded over them)"
            )
        if self.strategy == "fsdp" and self.schedule == "interleaved":
            raise ConfigError(
                "pipeline_schedule 'interleaved' with strategy 'fsdp' is not supported yet: a "
                "process's several stages share one model, which FSDP would shard twice; use "
                "--pipeline-schedule 1f1b or gpipe, or --strategy ddp"
            )
        if self.cpu_offload:
            raise ConfigError(
                f"cpu_offload with pipeline_parallel {size} is not supported yet (a stage sends "
                "its activations from the training device); drop --cpu-offload"
            )

    def _check_checkpoint_format(self) -> None:
        form = self.checkpoint_format
        if form not in CHECKPOINT_FORMATS:
            hint = closest(form, CHECKPOINT_FORMATS) if isinstance(form, str) else ""
            raise ConfigError(
                f"unknown checkpoint_format {form!r}{hint}; valid choices: "
                f"{', '.join(CHECKPOINT_FORMATS)}"
            )
        if form != "sharded":
            return
        if self.strategy == "deepspeed":
            raise ConfigError(
                "checkpoint_format 'sharded' with strategy 'deepspeed': DeepSpeed ZeRO writes "
                "its own per-process optimizer partitions already (deepspeed/zero-rank-*); use "
                "--checkpoint-format full, or --strategy fsdp for torch.distributed.checkpoint "
                "shards"
            )

    @property
    def schedule(self) -> str:
        """The pipeline schedule in force (the default when none was given)."""
        return self.pipeline_schedule or DEFAULT_PIPELINE_SCHEDULE

    @property
    def virtual_stages(self) -> int:
        """Stages each process holds (more than one under the interleaved schedule only)."""
        if self.schedule != "interleaved":
            return 1
        return self.stages_per_process or DEFAULT_STAGES_PER_PROCESS

    @property
    def split(self) -> str:
        """How the pipeline's stages are cut (the default when none was given)."""
        return self.pipeline_split or DEFAULT_PIPELINE_SPLIT

    @property
    def model_parallel(self) -> int:
        """Processes that together hold one copy of the model and read one batch."""
        return self.tensor_parallel * self.pipeline_parallel

    @property
    def stage(self) -> int:
        """The ZeRO stage DeepSpeed runs with (the default when none was given)."""
        return self.zero_stage if self.zero_stage is not None else DEFAULT_ZERO_STAGE

    @property
    def distributed(self) -> bool:
        """True for the strategies that run in a process group (any tensor or pipeline
        parallelism)."""
        return self.strategy != "single" or self.model_parallel > 1

    @classmethod
    def field_names(cls) -> list[str]:
        """Names of all fields, for building a CLI or validating keys of a config file."""
        return [f.name for f in fields(cls)]


def resolve_batch_size(
    batch_size: int | None, global_batch_size: int | None, accumulate: int, world: int
) -> int:
    """The micro-batch each process loads, from the per-process or the global batch size.

    The global batch (one optimizer step) is ``batch_size × accumulate × world``. Giving it
    instead of ``batch_size`` keeps the optimisation the same whatever the number of processes.

    Raises:
        ConfigError: A size that is not a positive integer, a global batch the processes and
            accumulation steps do not divide, or both sizes given and disagreeing.
    """
    for name, value in (("batch_size", batch_size), ("global_batch_size", global_batch_size)):
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 1
        ):
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if global_batch_size is None:
        return 32 if batch_size is None else batch_size
    share = accumulate * world
    if global_batch_size % share:
        raise ConfigError(
            f"global_batch_size {global_batch_size} is not divisible by world size {world} × "
            f"accumulate {accumulate} = {share}: every process must load the same number of "
            "sequences per micro-batch; choose a multiple of "
            f"{share} or another number of processes"
        )
    micro = global_batch_size // share
    if batch_size is not None and batch_size != micro:
        raise ConfigError(
            f"batch_size {batch_size} contradicts global_batch_size {global_batch_size} "
            f"({world} process(es) × accumulate {accumulate} gives {micro} per micro-batch); "
            "give only one of them"
        )
    return micro


def resolve_microbatches(parallel: ParallelConfig, batch_size: int) -> int:
    """How many micro-batches the pipeline cuts each per-process batch into.

    The given number, or the smallest one from ``pipeline_parallel`` up that divides the batch
    (1F1B needs at least one micro-batch per stage; fewer leave stages idle anyway), a multiple
    of ``pipeline_parallel`` under the interleaved schedule.

    Raises:
        ConfigError: A number that does not divide the batch, or a batch too small to give
            every stage a micro-batch.
    """
    stages = parallel.pipeline_parallel
    if stages == 1:
        return 1
    if parallel.microbatches is not None:
        if batch_size % parallel.microbatches:
            raise ConfigError(
                f"microbatches {parallel.microbatches} does not divide the per-process batch of "
                f"{batch_size} sequences: every micro-batch must have the same size; choose a "
                "divisor of the batch"
            )
        return parallel.microbatches
    step = stages if parallel.schedule == "interleaved" else 1
    for count in range(stages, batch_size + 1):
        if batch_size % count == 0 and count % step == 0:
            return count
    if step > 1:
        raise ConfigError(
            f"no multiple of pipeline_parallel {stages} divides the per-process batch of "
            f"{batch_size} sequences, which the interleaved schedule needs; choose a batch "
            f"that is a multiple of {stages}"
        )
    raise ConfigError(
        f"the per-process batch of {batch_size} sequences is smaller than pipeline_parallel "
        f"{stages}: each of the {stages} stages needs a micro-batch of at least one sequence; "
        "raise --batch-size / --global-batch-size"
    )
