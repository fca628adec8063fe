"""Pipeline parallelism: the encoder's layer stack cut into consecutive stages, one per process.

PyTorch's own engine runs the pipeline (``torch.distributed.pipelining``: ``PipelineStage`` and
the ``ScheduleGPipe`` / ``Schedule1F1B`` / ``ScheduleInterleaved1F1B`` schedules); this module
decides the split, keeps each process's part of the five-slot model and connects the model's
targets to the schedule:

- **the split**: stage 0 holds the embedding and the first layers of ``model.encoder.layers``,
  the last stage the last layers, the encoder's final norm and the targets, the stages between
  only layers. The pipeline runs at the pace of its slowest stage, so the layers are cut
  into consecutive runs that minimise the costliest: by parameter count (``stage_layers``;
  the embedding and the heads do not count, a lookup and the MLM head at the masked 15 % of
  positions cost little next to a layer) or by measured time (``pipeline_split`` time: rank 0
  times every part, ``balance_stages`` charges stage 0 the embedding and the last stage the
  targets). Under the interleaved schedule the stack is cut into M × V stages and process p
  holds stages p, p + M, ... Each process drops the modules of the stages it does not hold
  (never allocated off rank 0: those processes build on meta). An encoder-decoder model's
  stack is the encoder's layers, then the decoder's (``layer_slots``); between decoder
  stages the memory travels with the decoder's states (``_Seq2SeqStage``).
- **the loss**: the targets compute it from the labels in the batch. The last stage gets the
  rows of each micro-batch as the schedule's ``target`` and reads their labels from the batch
  it was given; each target's micro-batch mean is weighted by its share of the labelled
  tokens (rows, for NSP) of the whole batch, so the sum over micro-batches is the mean over
  the batch, exactly as one process computes it.
- **tied weights**: the MLM (or LM) head tied to the word embedding has one copy on stage 0
  and one on the last stage; their gradients are summed between the two before every update,
  so both copies take the same steps, and the gradient norm counts the pair once.
- **data parallelism**: several pipelines, each reading its own part of the data. With
  strategy ddp each stage's gradients are averaged over the same stage of every pipeline
  before the update; with strategy fsdp that stage's parameters, gradients and optimizer
  state are sharded over those processes instead (FSDP2 ``fully_shard`` over the "dp"
  dimension: each of the stage's layers one unit, the rest of the stage, the embedding or
  the targets, the root). The schedule drives FSDP itself: gradients are reduce-scattered
  once, after the step's last micro-batch, and the gathered parameters are kept across the
  micro-batches of a step (``reshard_after_forward`` off: one all-gather per step, not one
  per micro-batch) and freed after its backward.
- **tensor parallelism** (``tensor_parallel`` N): each stage is N processes that split its
  transformer blocks as ``distributed.tensor_parallel`` plans them, and its word tables and
  heads by vocabulary rows (the norms stay whole, or with sequence parallelism run on the
  local positions between the stack's start and end). The processes form a
  ``("dp", "pp", "tp")`` mesh; each "pp" row (one tensor-parallel index across the stages)
  runs its own copy of the schedule and sends the whole hidden states ``[b, s, h]`` (plain
  tensors: the blocks' row-wise outputs are all-reduced, or a sequence-sharded stack's
  output gathered) to the same index of the next stage.
- **checkpoints**: every stage's weights and optimizer state are gathered onto rank 0 and
  written in the usual format (the full ``model.safetensors``, the name-keyed optimizer
  state), which loads in one process and resumes on any layout; or, with checkpoint_format
  sharded, each process writes its own stage's part (``distributed.sharded_checkpoint``: a
  tied copy once, by the stage holding its source, and read back from it).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.tensor import DTensor, distribute_tensor

from pretrainkit.distributed.config import ParallelConfig, resolve_microbatches
from pretrainkit.distributed.engines import (
    WEIGHTS,
    Engine,
    full_tensor,
    materialize,
    split_grad_norm,
)
from pretrainkit.distributed.pipeline_plan import (
    BATCH_KEYS,
    SIDE_INPUTS,
    OnOtherStage,
    balance_stages,
    check_pipeline,
    keep_stage,
    label_count,
    layer_slots,
    measure_stage_costs,
    merge_optimizer_states,
    pad_batch,
    stage_layers,
    stage_optimizer_state,
)
from pretrainkit.distributed.tensor_parallel import check_tensor_parallel
from pretrainkit.encoders.transformer import TransformerEncoder
from pretrainkit.errors import CheckpointError, ConfigError, PretrainkitError, check_tensor_keys
from pretrainkit.fileio import read_safetensors
from pretrainkit.model import Model

logger = logging.getLogger(__name__)

# Full (unsharded) per-stage optimizer state keyed by parameter name.
STAGE_STATE = StateDictOptions(full_state_dict=True)


class _StageModule(nn.Module):
    """What ``PipelineStage`` runs: this stage's part of embedding → encoder.

    Stage 0 takes the token ids, the others the previous stage's hidden states ``[b, s, h]``;
    every stage gets the batch's side inputs (mask, segments, positions) as keywords. The
    encoder runs whole: the layers of other stages pass the input on, its final norm is only
    on the last stage. Under the interleaved schedule a process holds several stages of one
    model, so each stage's forward stands the process's other layers (and, but on the last
    stage, the final norm) aside while it runs (``alone``); autograd keeps what it recorded.
    """

    def __init__(
        self,
        model: Model,
        first: bool,
        precision: str,
        device: torch.device,
        layers: range | None = None,
        last: bool = True,
    ):
        super().__init__()
        self.model = model
        self.first = first
        self.precision, self.device = precision, device
        self.alone, self.last = layers, last

    def forward(
        self,
        inputs: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        example_ids: Tensor | None = None,
        prefix_lengths: Tensor | None = None,
    ) -> Tensor:
        from pretrainkit.training.precision import autocast

        encoder = cast(TransformerEncoder, self.model.encoder)
        saved = (list(encoder.layers), encoder.final_norm)
        try:
            if self.alone is not None:
                for index in range(len(encoder.layers)):
                    if index not in self.alone:
                        encoder.layers[index] = _PASS
                if not self.last:
                    encoder.final_norm = None
            with autocast(self.precision, self.device):
                hidden = inputs
                if self.first:
                    hidden = self.model.embedding(inputs, token_type_ids, position_ids)
                return encoder(
                    hidden,
                    attention_mask,
                    positions=position_ids,
                    example_ids=example_ids,
                    prefix_lengths=prefix_lengths,
                )
        finally:
            if self.alone is not None:
                for index, layer in enumerate(saved[0]):
                    encoder.layers[index] = layer
                encoder.final_norm = saved[1]


_PASS = OnOtherStage()


class _Seq2SeqStage(nn.Module):
    """What ``PipelineStage`` runs for an encoder-decoder model: this stage's ``layers`` of
    the encoder's ``E`` layers followed by the decoder's (numbered along ``layer_slots``).

    What passes between stages depends on where they cut: within the encoder its hidden
    states; at the encoder's end its output (the memory, after the encoder's final norm);
    within the decoder the decoder's hidden states and the memory, which every decoder layer
    reads (cross-attention) and which therefore travels on, its gradient flowing back through
    every stage that read it. The stage that holds the decoder's first layer embeds the
    decoder's inputs, a side input of every stage like the masks.
    """

    def __init__(
        self, model: Model, layers: range, last: bool, precision: str, device: torch.device
    ):
        super().__init__()
        self.model = model
        self.start, self.stop = layers.start, layers.stop
        self.split = len(cast(TransformerEncoder, model.encoder).layers)  # E
        self.last = last
        self.precision, self.device = precision, device

    def forward(
        self,
        *received: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        decoder_input_ids: Tensor | None = None,
        decoder_attention_mask: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        from pretrainkit.training.precision import autocast

        model = self.model
        with autocast(self.precision, self.device):
            if self.start < self.split:  # encoder layers here
                hidden = received[0]
                if self.start == 0:
                    hidden = cast(nn.Module, model.embedding)(hidden, token_type_ids, position_ids)
                hidden = cast(nn.Module, model.encoder)(hidden, attention_mask)
                if self.stop <= self.split:  # the memory when the encoder ends here
                    return hidden
                memory = hidden
            else:
                memory = received[-1]
            if self.start <= self.split:  # the decoder starts here
                target = cast(nn.Module, model.tgt_embedding)(decoder_input_ids)
            else:
                target = received[0]
            target = cast(nn.Module, model.decoder)(
                target, decoder_attention_mask, memory, model.encoder_mask(attention_mask)
            )
            if self.last:
                return target
            # A view, not the received tensor itself: the stage's outputs are new tensors.
            return target, memory.view_as(memory)


def _cpu(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_cpu(v) for v in value]
    return value


class PipelineEngine(Engine):
    """One stage of a pipeline per process (several under the interleaved schedule), trained
    by a ``torch.distributed.pipelining`` schedule (GPipe, 1F1B or interleaved 1F1B) over
    micro-batches of each batch.

    Every process of the pipeline reads the same batch; stage 0 feeds the token ids in, the
    last stage computes the targets' loss, and the loss and metrics are then shared with the
    other stages (every process logs and decides on non-finite values alike). With strategy
    ddp or fsdp there are several pipelines, each reading its own part of the data; ddp
    averages each stage's gradients over the pipelines before the update, fsdp shards the
    stage over them. With tensor parallelism each
    stage is ``tensor_parallel`` processes that split its blocks, each running the schedule
    with the processes of the same tensor-parallel index in the other stages.

    Args:
        parallel: The options (``pipeline_parallel``, schedule, micro-batches).
        micro_batch: Sequences per batch and process (cut into the micro-batches).
    """

    def __init__(
        self,
        model: nn.Module,
        config: Any,
        device: torch.device,
        precision: str,
        parallel: ParallelConfig,
        micro_batch: int,
    ):
        from torch.distributed.device_mesh import init_device_mesh

        stages = self.pipeline_parallel = parallel.pipeline_parallel
        tp = self.tp_size = parallel.tensor_parallel
        self.strategy_name = parallel.strategy  # single: one pipeline; ddp, fsdp: several
        self.schedule_name = parallel.schedule
        self.per_process = parallel.virtual_stages  # stages per process (interleaved: V > 1)
        self.split_name = parallel.split
        self.microbatches = resolve_microbatches(parallel, micro_batch)
        self.micro_rows = micro_batch // self.microbatches
        # What the stage split was decided on: boundaries, and with split time the costs.
        self.split_record: dict[str, Any] = {}
        # The processes form a ("dp", "pp") mesh, row-major: global rank = pipeline × stages
        # + stage. One pipeline per row; the same stage of every pipeline in a column. With
        # tensor parallelism, ("dp", "pp", "tp"): global rank = (pipeline × stages + stage) ×
        # tp + tp index, so a stage's processes are consecutive (one machine's fast links).
        self.pipelines = dist.get_world_size() // (stages * tp)
        self.pipeline_index, within = divmod(dist.get_rank(), stages * tp)
        self.stage_index, self.tp_index = divmod(within, tp)
        shape: tuple[int, ...] = (
            (self.pipelines, stages, tp) if tp > 1 else (self.pipelines, stages)
        )
        names: tuple[str, ...] = ("dp", "pp", "tp")[: len(shape)]
        mesh = self.layout_mesh = init_device_mesh(device.type, shape, mesh_dim_names=names)
        # "pp": the stages of this pipeline at this tensor-parallel index (the schedule's
        # send/recv); "dp": this stage and index in every pipeline (gradient averaging).
        self.pp_group, self.dp_group = mesh["pp"].get_group(), mesh["dp"].get_group()
        self.first = self.stage_index == 0
        self.last = self.stage_index == stages - 1
        # Sequence lengths the stage's buffers were built for (encoder, decoder or None).
        self._length: tuple[int, int | None] = (0, None)
        self._schedule: Any = None
        self._metric_names: list[str] | None = None
        self._records: dict[int, dict[str, Tensor]] = {}
        self._batch: dict[str, Tensor] = {}
        self._totals: dict[str, float] = {}
        self._accumulate = 1
        # Engine reads the tensor-parallel size from the mesh's "tp" dimension.
        super().__init__(
            model, config, device, precision, mesh if tp > 1 else None, parallel.sequence_parallel
        )

    # -- the split ---------------------------------------------------------------------

    @property
    def data_rank(self) -> int:
        return self.pipeline_index

    @property
    def data_world(self) -> int:
        return self.pipelines

    def peer(self, stage: int) -> int:
        """The global rank of ``stage`` in this process's pipeline (at its tensor-parallel
        index)."""
        return self.rank_of(self.pipeline_index, stage, self.tp_index)

    def rank_of(self, pipeline: int, stage: int, tp_index: int = 0) -> int:
        """The global rank of one process of the ``("dp", "pp", "tp")`` mesh."""
        return (pipeline * self.pipeline_parallel + stage) * self.tp_size + tp_index

    def place(self, model: nn.Module) -> nn.Module:
        # Moved to the device once pruned: the whole model never lands on one GPU.
        return model

    def wrap(self, model: nn.Module) -> nn.Module:
        """Keep this stage's modules, then copy rank 0's initial weights into them."""
        check_pipeline(model, self.pipeline_parallel, self.per_process, self.split_name)
        if self.tp_size > 1:
            check_tensor_parallel(model, self.tp_size, self.sequence_parallel)
        assert isinstance(model, Model)
        self.aliases = model.tied_parameters()
        on_meta = any(p.is_meta for p in model.parameters())
        self.ranges = self._split(model, on_meta)
        initial: dict[str, Tensor] = {}
        if dist.get_rank() == 0:  # its weights, before its own stage drops the others' modules
            if on_meta:
                raise ConfigError("rank 0 must build the model with real weights, not on meta")
            named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers()]
            initial = {name: value.detach() for name, value in named}
        # Process p holds stages p, p + M, p + 2M, ... of the M × V (V = 1 but interleaved).
        self.own_stages = list(range(self.stage_index, len(self.ranges), self.pipeline_parallel))
        self.own_layers = [i for v in self.own_stages for i in self.ranges[v]]
        keep_stage(model, self.own_layers, self.first, self.last)
        if not on_meta:
            model.to(self.device)
        self._split_stage(model)
        if on_meta:
            materialize(model, self.device)
        own = dict([*model.named_parameters(), *model.named_buffers()])
        wanted = gather_from_stages(sorted(own))
        # Every process starts from rank 0's values (buffers included: a process that built on
        # meta has none, and one that built real weights may have drawn other ones). A split
        # parameter receives the whole tensor, one at a time, and keeps its part.
        if dist.get_rank() == 0:
            for other in range(1, dist.get_world_size()):
                for name in wanted[other]:
                    dist.send(initial[name].to(self.device).contiguous(), dst=other)
        else:
            for name in sorted(own):
                shape, dtype = tuple(own[name].shape), own[name].dtype  # a DTensor's: the whole
                received = torch.empty(shape, dtype=dtype, device=self.device)
                dist.recv(received, src=0)
                copy_whole(own[name], received)
        del initial
        self.stage_modules = self._stage_modules(model)
        if self.strategy_name == "fsdp":
            self._shard(model)
        # What each process saves (tied copies once).
        state = [
            (name, tuple(value.shape), value.dtype)
            for name, value in model.state_dict().items()
            if name not in self.aliases
        ]
        # The first pipeline's stages at tensor-parallel index 0 (global shapes: a split
        # weight is saved whole), for gathering onto rank 0.
        gathered = gather_from_stages(state)
        firsts = [self.rank_of(0, stage) for stage in range(self.pipeline_parallel)]
        self.layout: list[list[tuple[str, tuple[int, ...], torch.dtype]]] = [
            gathered[index] for index in firsts
        ]
        self._tie_groups(model, [wanted[index] for index in firsts])
        return model

    def _stage_modules(self, model: Model) -> list[nn.Module]:
        """What the schedule runs: one module per stage this process holds."""
        if model.decoder is not None:  # one stage per process (checked)
            last = self.stage_index == len(self.ranges) - 1
            return [
                _Seq2SeqStage(
                    model, self.ranges[self.stage_index], last, self.precision, self.device
                )
            ]
        if self.per_process == 1:
            return [_StageModule(model, self.first, self.precision, self.device)]
        return [
            _StageModule(
                model,
                stage == 0,
                self.precision,
                self.device,
                layers=self.ranges[stage],
                last=stage == len(self.ranges) - 1,
            )
            for stage in self.own_stages
        ]

    def _shard(self, model: Model) -> None:
        """Strategy fsdp: shard this stage over the same stage of every pipeline ("dp").

        Each of the stage's layers is one FSDP unit and the stage module the root (holding
        the embedding on the first stage, the final norm and the targets on the last), so the
        schedule finds an ``FSDPModule`` and drives it: no gradient reduction before a step's
        last micro-batch, then one reduce-scatter. Gathered parameters stay gathered through a
        step's micro-batches (``reshard_after_forward`` False), which also keeps the targets'
        weights whole while the loss, outside the stage's forward, uses them. Under tensor
        parallelism the blocks are already split over "tp"; FSDP shards them over "dp" (2-D).
        Called after the initial weights are in: sharding keeps each process's part.
        """
        from torch.distributed.fsdp import fully_shard

        from pretrainkit.distributed.engines import fsdp_options

        options = fsdp_options(self.precision)
        options["mesh"] = self.layout_mesh["dp"]
        options["reshard_after_forward"] = False
        slots = layer_slots(model)
        for index in self.own_layers:
            stack, local = slots[index]
            fully_shard(stack.layers[local], **options)
        fully_shard(self.stage_modules[0], **options)

    def _split(self, model: Model, on_meta: bool) -> list[range]:
        """The stages' layer ranges, the same on every process, by parameter count or by
        measured time (rank 0 measures, on its real weights, and sends the costs to all, so
        every process cuts alike however its own clock runs); logged once, and kept in
        ``split_record``."""
        sizes = [
            sum(p.numel() for p in stack.layers[index].parameters())
            for stack, index in layer_slots(model)
        ]
        record: dict[str, Any] = {"split": self.split_name}
        count = self.pipeline_parallel * self.per_process
        if self.split_name == "params":
            ranges = stage_layers(sizes, count)
        else:
            box: list[Any] = [None]
            if dist.get_rank() == 0:
                if on_meta:
                    raise ConfigError("rank 0 must build the model with real weights, not on meta")
                # The longest sequence the model takes: the engine is built before the first
                # batch, and a shorter run only shifts the attention's share a little.
                emb = model.config.embedding
                length = emb.max_positions - emb.position_offset
                costs = measure_stage_costs(
                    model, self.micro_rows, length, self.device, self.precision
                )
                box = [{"micro_batch": [self.micro_rows, length], **costs}]
            dist.broadcast_object_list(box, src=0)
            costs = box[0]
            ranges = balance_stages(costs["layers"], count, costs["embedding"], costs["head"])
            record["seconds"] = costs
        record["stages"] = [[r.start, r.stop] for r in ranges]
        self.split_record = record
        if dist.get_rank() == 0:
            stages = ", ".join(f"layers {r.start}-{r.stop - 1}" for r in ranges)
            if self.split_name == "params":
                logger.info("pipeline split by parameters (%s per layer): %s", sizes, stages)
            else:
                seconds = record["seconds"]
                layer_ms = ", ".join(f"{1e3 * t:.3g}" for t in seconds["layers"])
                logger.info(
                    "pipeline split by measured time (forward + backward of a %d × %d "
                    "micro-batch, ms): embedding %.3g, layers [%s], targets %.3g → %s",
                    *seconds["micro_batch"],
                    1e3 * seconds["embedding"],
                    layer_ms,
                    1e3 * seconds["head"],
                    stages,
                )
        return ranges

    def _split_stage(self, model: nn.Module) -> None:
        """Split this stage's transformer blocks over its "tp" processes (no-op without TP).

        The blocks as ``distributed.tensor_parallel`` plans them, and the word tables and the
        heads onto them by vocabulary rows; the hidden states a stage sends on are whole plain
        tensors (the row-wise outputs are all-reduced, the table's sums too). With sequence
        parallelism each stack this stage runs layers of splits its input along the sequence
        as it begins (there is no embedding slot before it on a later stage) and gathers its
        output as it ends; its norms, the final one included, run on the local positions.
        ``src_data_rank=None``: each process keeps its part of what it holds; the initial
        weights are copied in afterwards.
        """
        if self.tp_size == 1:
            return
        from torch.distributed.tensor.parallel import parallelize_module

        from pretrainkit.distributed.tensor_parallel import block_plan
        from pretrainkit.distributed.tensor_parallel_styles import (
            GatherSequenceOutput,
            SequenceParallelNorm,
            SequenceShardedDropout,
            ShardSequenceInput,
        )
        from pretrainkit.distributed.tensor_parallel_vocabulary import split_vocabulary

        mesh, sequence = self.mesh["tp"], self.sequence_parallel
        slots = layer_slots(cast(Model, model))
        stacks: dict[int, TransformerEncoder] = {}
        for index in self.own_layers:
            stack, local = slots[index]
            block = stack.layers[local]
            parallelize_module(block, mesh, block_plan(block, sequence), src_data_rank=None)
            dropout = getattr(block, "dropout", None)
            if sequence and type(dropout) is nn.Dropout:
                block.dropout = SequenceShardedDropout(dropout.p)
            stacks[id(stack)] = stack
        for stack in stacks.values() if sequence else ():
            parallelize_module(stack, mesh, ShardSequenceInput())
            parallelize_module(stack, mesh, GatherSequenceOutput())
            norm = getattr(stack, "final_norm", None)  # on the stage holding it
            if norm is not None:
                parallelize_module(norm, mesh, SequenceParallelNorm(), src_data_rank=None)
        # The word tables and heads this stage holds, by vocabulary rows (stage 0's table and
        # the last stage's tied head alike, so their gradients' parts meet row for row).
        vocabulary = cast(Model, model).config.vocab_size
        split_vocabulary(model, mesh, src_data_rank=None, vocabulary=vocabulary)

    def _tie_groups(self, model: nn.Module, wanted: list[list[str]]) -> None:
        """The tied weights held by several stages, and a process group for each in each
        pipeline and tensor-parallel index (``wanted``: each stage's names).

        A tied set is a source and its aliases (the word embedding, an MLM or LM head, an
        encoder-decoder's target embedding): its holders are the stages holding any of them;
        their gradients are summed over all holders before every update, and the gradient
        norm counts the set on its first holder only.
        """
        holder = {name: stage for stage, names in enumerate(wanted) for name in names}
        params = dict(model.named_parameters())
        sets: dict[str, set[str]] = {}
        for alias, source in self.aliases.items():
            sets.setdefault(source, {source}).add(alias)
        self.tied: list[tuple[nn.Parameter, Any]] = []
        self.tied_copies: set[int] = set()  # parameters the norm must not count twice
        for _, names in sorted(sets.items()):
            holders = sorted({holder[name] for name in names if name in holder})
            if len(holders) < 2:
                continue
            if holders == list(range(self.pipeline_parallel)):  # the whole pipeline
                group = self.pp_group
            else:  # every process creates every pipeline's groups, in the same order
                groups = {
                    (row, index): dist.new_group([self.rank_of(row, s, index) for s in holders])
                    for row in range(self.pipelines)
                    for index in range(self.tp_size)
                }
                group = groups[self.pipeline_index, self.tp_index]
            # On one process the tied names are one parameter (named once).
            own = next((params[name] for name in sorted(names) if name in params), None)
            if own is None:
                continue
            self.tied.append((own, group))
            if self.stage_index != holders[0]:
                self.tied_copies.add(id(own))

    # -- one step ------------------------------------------------------------------------

    def _schedule_for(self, length: tuple[int, int | None]) -> Any:
        """The schedule whose stage buffers fit ``length`` positions (the encoder's and, in an
        encoder-decoder model, the decoder's; built on first use and again when a longer batch
        comes; every stage sees the same batch, so all agree)."""
        if self._schedule is not None and length == self._length:
            return self._schedule
        from torch.distributed.pipelining import (
            PipelineStage,
            Schedule1F1B,
            ScheduleGPipe,
            ScheduleInterleaved1F1B,
        )

        stages: list[Any] = [
            PipelineStage(module, index, len(self.ranges), self.device, group=self.pp_group)
            for module, index in zip(self.stage_modules, self.own_stages, strict=True)
        ]
        # The loss function on every stage: it tells the schedule there is a backward pass.
        # scale_grads=False: the loss is already the batch mean (weighted micro-batch means).
        if self.schedule_name == "interleaved":
            self._schedule = ScheduleInterleaved1F1B(
                stages, self.microbatches, loss_fn=self._loss, scale_grads=False
            )
        else:
            kind = ScheduleGPipe if self.schedule_name == "gpipe" else Schedule1F1B
            self._schedule = kind(
                stages[0], self.microbatches, loss_fn=self._loss, scale_grads=False
            )
        self._length = length
        return self._schedule

    def forward_backward(
        self, batch: dict[str, Tensor], accumulate: int, last: bool
    ) -> tuple[Tensor, dict[str, Tensor]]:
        unknown = sorted(set(batch) - set(BATCH_KEYS))
        if "input_ids" not in batch or unknown:
            raise ConfigError(
                "pipeline parallelism takes token batches (input_ids, labels, pair_labels, "
                f"{', '.join(SIDE_INPUTS)}); this batch has {', '.join(sorted(batch))}"
            )
        rows = batch["input_ids"].shape[0]
        if rows % self.microbatches:
            raise ConfigError(
                f"a batch of {rows} sequences does not split into {self.microbatches} equal "
                "micro-batches"
            )
        length = max(self._length[0], batch["input_ids"].shape[1])
        decoder_length, pad_id = None, 0
        model = cast(Model, self.model)
        decoder = model.config.decoder
        if decoder is not None:  # its side padded to its own length
            if "labels" not in batch:
                raise ConfigError("an encoder-decoder model's pipeline needs labels in the batch")
            if "decoder_input_ids" not in batch:
                inputs = model.decoder_inputs(batch["labels"])
                batch = {**batch, "decoder_input_ids": inputs}
            decoder_length = max(self._length[1] or 0, batch["labels"].shape[1])
            pad_id = decoder.pad_id
        if self.pipelines > 1:
            length, decoder_length = self._agree(length, decoder_length)
        batch = pad_batch(batch, length, decoder_length, pad_id)
        schedule = self._schedule_for((length, decoder_length))
        side = {key: batch[key] for key in SIDE_INPUTS if key in batch}
        self._records = {}
        losses: list[Tensor] = []
        if self.first:
            schedule.step(batch["input_ids"], **side)
        elif self.last:
            self._batch, self._accumulate = batch, accumulate
            self._totals = {
                name: max(1, int(label_count(target, batch[target.label_key])))
                for name, target in self.model.target_modules().items()  # type: ignore[operator]
                if target.label_key in batch
            }
            index = torch.arange(rows, device=self.device)
            schedule.step(target=index, losses=losses, return_outputs=False, **side)
            self._batch = {}
        else:
            schedule.step(**side)
        return self._share(losses)

    def _agree(self, length: int, decoder_length: int | None) -> tuple[int, int | None]:
        """The longest lengths over the pipelines: every pipeline pads to them, so all build
        their schedules alike. A schedule built anew probes its shapes with a real forward and
        backward, whose FSDP gathers and reductions over "dp" would otherwise wait for
        pipelines that are not probing (a hang)."""
        lengths = torch.tensor([length, decoder_length or 0], device=self.device)
        dist.all_reduce(lengths, op=dist.ReduceOp.MAX, group=self.dp_group)
        return int(lengths[0]), (int(lengths[1]) if decoder_length is not None else None)

    def _loss(self, hidden: Tensor, rows: Tensor) -> Tensor:
        """The targets' loss on one micro-batch (``rows`` of the batch), as its share of the
        batch mean: each target's micro-batch mean × its labelled entries here / in the batch.
        """
        from pretrainkit.training.precision import autocast

        batch = self._batch
        # A sequence-to-sequence target reads the decoder's states: their mask.
        seq2seq = self.model.decoder is not None  # type: ignore[union-attr]
        mask = batch["decoder_attention_mask" if seq2seq else "attention_mask"][rows]
        total: Tensor | None = None
        metrics: dict[str, Tensor] = {}
        with autocast(self.precision, self.device):
            for name, target in self.model.target_modules().items():  # type: ignore[operator]
                labels = batch.get(target.label_key)
                if labels is None:
                    continue
                labels = labels[rows]
                out = target(hidden, mask, labels)
                if out.loss is None:
                    continue
                weight = label_count(target, labels).float() / self._totals[name]
                weight = weight / self._accumulate
                part = out.loss.float() * weight
                total = part if total is None else total + part
                for metric, value in out.metrics.items():
                    metrics[metric] = value.detach().float() * weight
        if total is None:
            raise PretrainkitError("the model returned no loss; does the batch have labels?")
        # Keyed by the micro-batch's first row: the schedule's shape probe on its first step
        # computes micro-batch 0 once more beforehand, and is overwritten here.
        self._records[int(rows[0])] = metrics
        return total

    def _share(self, losses: list[Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """The last stage's loss and metrics, on every stage (one broadcast)."""
        source = self.peer(self.pipeline_parallel - 1)
        sums: dict[str, Tensor] = {}
        for record in self._records.values():
            for name, value in record.items():
                sums[name] = sums[name] + value if name in sums else value
        if self._metric_names is None:
            box = [sorted(sums)]
            dist.broadcast_object_list(box, src=source, group=self.pp_group)
            self._metric_names = list(box[0])
        names = self._metric_names
        values = torch.zeros(1 + len(names), device=self.device)
        if self.last:
            if sorted(sums) != names:
                raise PretrainkitError(
                    f"the targets' metrics changed between steps: {names} → {sorted(sums)}"
                )
            loss = torch.stack(losses).detach().sum()
            values = torch.stack([loss, *(sums[n] for n in names)]).float()
        dist.broadcast(values, src=source, group=self.pp_group)
        return values[0], dict(zip(names, values[1:]))

    def check_batch(self, batch: dict[str, Tensor]) -> None:
        """Fail when the stages (or a stage's tensor-parallel processes) were given different
        batches (a data source split by the global rank instead of the data-parallel one);
        checked on the first batch."""
        from pretrainkit.distributed.tensor_parallel import batch_checksum

        local = batch_checksum(batch).to(self.device)
        gathered = [torch.zeros_like(local) for _ in range(self.pipeline_parallel)]
        dist.all_gather(gathered, local, group=self.pp_group)
        if any(not torch.equal(other, gathered[0]) for other in gathered):
            raise ConfigError(
                "pipeline parallelism: the stages of one pipeline were given different batches; "
                "the batch source must be split by the data-parallel rank and size "
                "(pretrainkit.distributed.data_parallel_rank / data_parallel_size), not by the "
                "global rank"
            )
        super().check_batch(batch)  # the same within each stage's tensor-parallel group

    def step(self, max_norm: float | None) -> tuple[float, bool]:
        self._sum_tied_gradients()
        self._average_over_pipelines()
        return super().step(max_norm)

    def _average_over_pipelines(self) -> None:
        """With several pipelines (strategy ddp), each stage's gradients averaged over the
        same stage of every pipeline, once per optimizer step (as DDP does, without its
        overlap of communication and backward: the schedule owns the backward)."""
        if self.pipelines == 1 or self.strategy_name == "fsdp":  # FSDP has reduce-scattered
            return
        for param in self.params:
            if param.grad is None:
                param.grad = torch.zeros_like(param)
            # A split gradient: its part here, averaged with the same part in every pipeline.
            local = param.grad.to_local() if isinstance(param.grad, DTensor) else param.grad
            dist.all_reduce(local, group=self.dp_group)
            local.div_(self.pipelines)

    def _sum_tied_gradients(self) -> None:
        """A weight held by several stages (word embedding, tied head, a decoder's table) gets
        the sum of their gradients on each, as the one shared tensor would in one process."""
        for param, group in self.tied:
            if param.grad is None:
                param.grad = torch.zeros_like(param)
            # Under fsdp both copies are sharded alike over "dp": the same rows meet.
            grad = param.grad
            if isinstance(grad, DTensor) and isinstance(param, DTensor):
                # A split table's lookup may leave its gradient replicated: laid out as the
                # weight (a local slice, no communication), both copies' parts are the same rows.
                if grad.placements != param.placements:
                    grad = param.grad = grad.redistribute(param.device_mesh, param.placements)
            dist.all_reduce(grad.to_local() if isinstance(grad, DTensor) else grad, group=group)

    def grad_norm(self, max_norm: float | None) -> Tensor:
        """The norm over every stage's gradients (a tied pair once), clipping when asked.

        A stage's norm is whole over its tensor-parallel processes (split gradients summed
        over them, whole ones counted once: ``split_grad_norm``); the stages' squares are then
        summed over the pipeline, whose "pp" group holds one process per stage.
        """
        counted = [p for p in self.params if id(p) not in self.tied_copies]
        local = split_grad_norm(counted, None)
        squares = local.double().pow(2).reshape(1).to(self.device)
        dist.all_reduce(squares, group=self.pp_group)  # pipelines hold equal gradients
        total = squares.sqrt().float().cpu().reshape(())
        if max_norm is not None:
            coefficient = float(max_norm / (total + 1e-6))
            if coefficient < 1.0:
                for param in self.params:
                    if param.grad is not None:
                        param.grad.mul_(coefficient)
        return total

    # -- checkpoints (every method is called on every process) ---------------------------

    def full_state_dict(self) -> dict[str, Tensor] | None:
        """Every stage's weights gathered onto rank 0 (tied copies once), from the first
        pipeline (the others hold the same weights); None elsewhere.

        A split weight is made whole within its stage first (``full_tensor``: every process
        of the stage takes part, across the pipelines too when fsdp shards over them), then
        sent by the stage's first process.
        """
        if self.pipeline_index > 0 and self.strategy_name != "fsdp":
            return None
        own = self.model.state_dict()
        full: dict[str, Tensor] = {}
        for name, _, _ in self.layout[self.stage_index]:
            value = full_tensor(own[name].detach())
            if self.pipeline_index > 0:
                continue
            if dist.get_rank() == 0:
                full[name] = value.cpu()
            elif self.tp_index == 0:
                dist.send(value.contiguous(), dst=0)
        if dist.get_rank() != 0:
            return None
        for stage in range(1, self.pipeline_parallel):
            for name, shape, dtype in self.layout[stage]:
                received = torch.empty(shape, dtype=dtype, device=self.device)
                dist.recv(received, src=self.rank_of(0, stage))
                full[name] = received.cpu()
        return full

    def optimizer_state(self) -> dict[str, Any] | None:
        """Every stage's optimizer state, keyed by parameter name, merged on rank 0 (from the
        first pipeline)."""
        if self.pipeline_index > 0 and self.strategy_name != "fsdp":
            return None
        # Split moments are gathered whole within the stage (all its processes take part,
        # across the pipelines too when fsdp shards over them).
        own = _cpu(get_optimizer_state_dict(self.model, self.optimizer, options=STAGE_STATE))
        if self.tp_index > 0 or self.pipeline_index > 0:
            return None
        if not self.first:
            dist.send_object_list([own], dst=0)
            return None
        parts = [own]
        for stage in range(1, self.pipeline_parallel):
            box: list[Any] = [None]
            dist.recv_object_list(box, src=self.rank_of(0, stage))
            parts.append(box[0])
        return merge_optimizer_states(parts, self.aliases)

    def load(self, directory: Path, state: dict[str, Any]) -> None:
        if state.get("checkpoint_format") == "sharded":  # each stage reads its tensors
            super().load(directory, state)
            return
        self.load_weights(directory)
        try:
            if state.get("format", 1) == 1:
                raise CheckpointError(
                    f"{directory}: its optimizer state is keyed by parameter index (an older "
                    "pretrainkit); resume it with pipeline_parallel 1"
                )
            names = [name for name, p in self.model.named_parameters() if p.requires_grad]
            own = stage_optimizer_state(state["optimizer"], names, self.aliases)
            set_optimizer_state_dict(self.model, self.optimizer, own, options=STAGE_STATE)
            self.per_tensor_updates()  # the saved flags may ask for a fused kernel
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            if isinstance(error, CheckpointError):
                raise
            raise CheckpointError(f"{directory}: optimizer state does not fit: {error}") from None

    def load_weights(self, directory: Path) -> None:
        """This stage's part of a full ``model.safetensors`` (checked against the whole
        model, so a file of another shape fails on every stage alike)."""
        path = Path(directory) / WEIGHTS
        weights = read_safetensors(path)
        expected = {name: shape for stage in self.layout for name, shape, _ in stage}
        missing = sorted(set(expected) - set(weights))
        unexpected = sorted(set(weights) - set(expected))
        wrong = [
            f"{name}: file {tuple(weights[name].shape)} vs model {shape}"
            for name, shape in expected.items()
            if name in weights and tuple(weights[name].shape) != shape
        ]
        check_tensor_keys(f"{path} does not match its config", missing, unexpected, wrong)
        own: dict[str, Any] = {
            name: weights[self.aliases.get(name, name)] for name in self.model.state_dict()
        }
        if self.strategy_name == "fsdp":  # every process keeps its shard (and TP part)
            from torch.distributed.checkpoint.state_dict import set_model_state_dict

            set_model_state_dict(self.model, own, options=STAGE_STATE)
            return
        if self.tp_size == 1:
            self.model.load_state_dict(own)
            return
        targets = self.model.state_dict(keep_vars=True)
        for name, value in own.items():  # a split weight keeps its part of the whole
            copy_whole(targets[name], value.to(self.device))


def copy_whole(target: Tensor, whole: Tensor) -> None:
    """Copy a whole tensor into ``target``; a split (DTensor) target keeps only its part."""
    with torch.no_grad():
        if isinstance(target, DTensor):
            part = distribute_tensor(
                whole, target.device_mesh, target.placements, src_data_rank=None
            )
            target.to_local().copy_(part.to_local())
        else:
            target.copy_(whole)


def gather_from_stages(value: Any) -> list[Any]:
    """Every stage's ``value`` (small, picklable), in stage order, on every stage."""
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered
