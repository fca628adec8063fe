"""Engines: the one interface through which the training loop uses a distribution strategy.

The loop calls ``forward_backward``, ``step`` and the state-dict methods and never asks which
engine it holds. ``Engine`` itself is one process; ``DDPEngine`` and ``FSDPEngine`` wrap
PyTorch's engines; ``distributed.zero.DeepSpeedEngine`` wraps DeepSpeed ZeRO;
``distributed.pipeline.PipelineEngine`` runs PyTorch's pipeline schedules.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor, nn

from pretrainkit.errors import CheckpointError, ConfigError
from pretrainkit.fileio import read_safetensors

if TYPE_CHECKING:
    from types import ModuleType

    from pretrainkit.training.config import TrainConfig

WEIGHTS = "model.safetensors"


def dcp_state_dict() -> ModuleType:
    """``torch.distributed.checkpoint.state_dict``, imported on first use.

    Importing it pulls in DTensor and the checkpoint planners: 1.3-1.6 s on a 2-core CPU
    (``python -X importtime``), which every one-process run paid before its first step.
    """
    import torch.distributed.checkpoint.state_dict as state_dict

    return state_dict


# Checkpoints hold the full (unsharded) optimizer state keyed by parameter name, gathered on
# rank 0, rather than torch.distributed.checkpoint's one-file-per-rank layout: one format for
# single, DDP and FSDP, readable by one process and resumable under another of these strategies.
# Its cost is rank 0's host memory (8 bytes per parameter for AdamW's two moments); past that,
# sharded DCP checkpoints are the way (see docs/DISTRIBUTED.md).
def full_options() -> Any:
    """The options of the ``full`` checkpoint format: gathered onto rank 0, on the CPU."""
    return dcp_state_dict().StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_tensor(value: Tensor) -> Tensor:
    """A DTensor's global value (a plain tensor is returned as it is)."""
    return value.full_tensor() if hasattr(value, "full_tensor") else value


class Engine:
    """One process, no wrapper: the model trains as it is (strategy ``single``).

    Args:
        model: The model, on ``device``.
        config: The training options (optimizer, clipping, precision).
        device: The training device.
        precision: The resolved precision (``fp16`` gets a gradient scaler).
    """

    strategy_name = "single"
    """The strategy's name, as ``--strategy`` spells it (for logs)."""
    trust_checkpoint = False
    """Resume from checkpoint files that cannot be verified or that only load with pickle
    (``ParallelConfig.trust_checkpoint``; ``parallelize`` sets it)."""
    checkpoint_format = "full"
    """``full`` (weights and optimizer gathered onto rank 0) or ``sharded`` (every process writes
    its part, ``distributed.sharded_checkpoint``); ``ParallelConfig.checkpoint_format``."""
    mesh: Any = None
    """The ("dp", "tp") DeviceMesh of a tensor-parallel run; None otherwise."""
    tensor_parallel = 1
    """Processes that share one model's layers (the "tp" size)."""
    sequence_parallel = False
    """Under TP, the activations between sub-layers are also split along the sequence."""
    pipeline_parallel = 1
    """Processes that hold one stage each of one model's layer stack (the pipeline's length)."""

    @property
    def model_parallel(self) -> int:
        """Processes that together hold one copy of the model and read the same batches."""
        return self.tensor_parallel * self.pipeline_parallel

    @property
    def data_rank(self) -> int:
        """This process's index among the processes that read different data ("dp")."""
        if self.mesh is not None:
            return int(self.mesh["dp"].get_local_rank())
        from pretrainkit.distributed.parallel import rank

        return rank()

    @property
    def data_world(self) -> int:
        """How many processes read different data (all of them without TP)."""
        if self.mesh is not None:
            return int(self.mesh["dp"].size())
        from pretrainkit.distributed.parallel import world_size

        return world_size()

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        device: torch.device,
        precision: str,
        mesh: Any = None,
        sequence_parallel: bool = False,
    ):
        # Imported here: pretrainkit.training imports this package.
        from pretrainkit.training.optim import build_optimizer
        from pretrainkit.training.precision import grad_scaler

        self.device = device
        self.precision = precision
        # The 2-D ("dp", "tp") DeviceMesh of a tensor-parallel run, else None. The processes
        # of one "tp" row hold parts of one model and must see the same batches: the data is
        # split over "dp" only.
        self.mesh = mesh
        self.tensor_parallel = mesh["tp"].size() if mesh is not None else 1
        self.sequence_parallel = sequence_parallel
        self.model = self.place(model)
        self.module = self.wrap(self.model)
        self.optimizer = build_optimizer(self.module, config)
        self.per_tensor_updates()
        self.scaler = grad_scaler(precision, device)
        self.params = [p for p in self.module.parameters() if p.requires_grad]

    def place(self, model: nn.Module) -> nn.Module:
        """Move the model to the training device (before ``wrap``).

        A model on the meta device (TP ranks other than 0) is materialised by ``wrap``.
        """
        if any(p.is_meta for p in model.parameters()):
            return model
        return model.to(self.device)

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module the loop calls; the model itself here (its blocks split under TP).

        Under TP, processes other than rank 0 may have built the model on the meta device (no
        memory): after splitting, each allocates only its parts and receives rank 0's values.
        """
        if self.tensor_parallel == 1:
            return model
        import torch.distributed as dist

        on_meta = any(p.is_meta for p in model.parameters())
        flag = torch.tensor([int(on_meta)], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)  # every process takes the same path
        if not flag.item():  # every process has real weights: rank 0's parts are scattered
            return self.split(model, src_data_rank=0)
        initial = rank0_weights(model, on_meta)
        self.split(model, src_data_rank=None)
        if on_meta:
            materialize(model, self.device)
        sd = dcp_state_dict()
        sd.set_model_state_dict(
            model,
            initial,
            options=sd.StateDictOptions(full_state_dict=True, broadcast_from_rank0=True),
        )
        broadcast_buffers(model)
        return model

    def per_tensor_updates(self) -> None:
        """Under TP, update the parameters one by one instead of in one fused kernel.

        The split parameters are DTensors (on the "tp" mesh, or the 2-D one under FSDP) and the
        replicated ones plain tensors or DTensors on another mesh; the fused and multi-tensor
        AdamW kernels refuse such a mixed list. The per-tensor loop computes the same update,
        with more kernel launches. Called again after loading an optimizer state, which
        carries the flags of the run that saved it.
        """
        if self.tensor_parallel == 1:
            return
        for group in [*self.optimizer.param_groups, self.optimizer.defaults]:
            if "fused" in group or "foreach" in group:
                group["fused"], group["foreach"] = False, False

    def split(self, model: nn.Module, src_data_rank: int | None) -> nn.Module:
        """Split the transformer blocks over the "tp" processes (no-op without TP).

        ``src_data_rank``: 0 scatters the first process's values; None keeps each process's
        own part, for callers that broadcast rank 0's weights afterwards (models on meta).
        """
        if self.tensor_parallel == 1:
            return model
        from pretrainkit.distributed.tensor_parallel import apply_tensor_parallel

        return apply_tensor_parallel(
            model, self.mesh["tp"], src_data_rank, sequence_parallel=self.sequence_parallel
        )

    def check_batch(self, batch: dict[str, Tensor]) -> None:
        """Under TP, fail when the processes of one "tp" row were given different batches.

        They compute parts of one model on one batch; a batch source split over all processes
        (``rank()`` / ``world_size()`` instead of the data-parallel rank and size) would train
        garbage silently. Checked on the first batch (one small collective).
        """
        if self.tensor_parallel == 1:
            return
        import torch.distributed as dist

        from pretrainkit.distributed.tensor_parallel import batch_checksum

        local = batch_checksum(batch).to(self.device)  # NCCL gathers GPU tensors only
        gathered = [torch.zeros_like(local) for _ in range(self.tensor_parallel)]
        dist.all_gather(gathered, local, group=self.mesh["tp"].get_group())
        if any(not torch.equal(other, gathered[0]) for other in gathered):
            raise ConfigError(
                "tensor parallelism: the processes of one tensor-parallel group were given "
                "different batches; the batch source must be split by the data-parallel rank "
                "and size (pretrainkit.distributed.data_parallel_rank / data_parallel_size), "
                "not by the global rank"
            )

    def accumulating(self, last: bool) -> contextlib.AbstractContextManager:
        """Context of one micro-batch's forward and backward; ``last`` ends the step."""
        return contextlib.nullcontext()

    def forward_backward(
        self, batch: dict[str, Tensor], accumulate: int, last: bool
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """One micro-batch's forward and backward: the loss (divided by ``accumulate``, as
        back-propagated) and the model's metrics (divided likewise), both detached.

        Every engine but the pipeline's runs the model as a whole here; a pipeline schedule
        owns both passes, which is why the loop hands over the batch rather than the loss.

        Args:
            batch: The micro-batch, on the device.
            accumulate: Micro-batches per optimizer step.
            last: This is the step's last micro-batch (DDP all-reduces gradients in it).
        """
        from pretrainkit.errors import PretrainkitError
        from pretrainkit.training.precision import autocast

        with self.accumulating(last):
            with autocast(self.precision, self.device):
                output = self.module(**batch)
            if getattr(output, "loss", None) is None:
                raise PretrainkitError("the model returned no loss; does the batch have labels?")
            loss = output.loss.float() / accumulate
            self.backward(loss)
        metrics = {
            name: value.detach().float() / accumulate
            for name, value in (getattr(output, "metrics", None) or {}).items()
        }
        return loss.detach(), metrics

    def backward(self, loss: Tensor) -> None:
        """Back-propagate a micro-batch's loss (already divided by the accumulation steps)."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def grad_norm(self, max_norm: float | None) -> Tensor:
        """The global gradient L2 norm, clipping to ``max_norm`` when given."""
        if self.tensor_parallel > 1:
            return split_grad_norm(self.params, max_norm)
        if max_norm is not None:
            return full_tensor(nn.utils.clip_grad_norm_(self.params, max_norm))
        return full_tensor(
            nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])
        )

    def step(self, max_norm: float | None) -> tuple[float, bool]:
        """Clip and update. Returns ``(grad_norm, applied)``.

        ``applied`` is False when the gradient norm is not finite: the update is skipped and
        the gradients dropped. Under fp16 an inf gradient is routine (the scaler skips that
        update itself and lowers the scale), so it counts as applied.
        """
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        norm = float(self.grad_norm(max_norm))
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        elif not math.isfinite(norm):
            self.zero_grad()
            return norm, False
        else:
            self.optimizer.step()
        self.zero_grad()
        return norm, True

    def skip(self) -> None:
        """Drop this step's gradients (non-finite loss); fp16 lowers its loss scale."""
        self.zero_grad()
        if self.scaler is not None:
            self.scaler.update(self.scaler.get_scale() * self.scaler.get_backoff_factor())

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    # -- checkpoints (every method is called on every process) ---------------------------

    def full_state_dict(self) -> dict[str, Tensor] | None:
        """The full weights on rank 0 when the model's own ``state_dict`` is not (sharded).

        None means ``model.save`` can write its own ``state_dict`` (one process, DDP). Under
        TP the split weights are gathered onto rank 0 (``full_tensor``).
        """
        if self.tensor_parallel == 1:
            return None
        sd = dcp_state_dict()
        return cast(dict[str, Tensor], sd.get_model_state_dict(self.module, options=full_options()))

    def optimizer_state(self) -> dict[str, Any] | None:
        """The full optimizer state keyed by parameter name (on rank 0; None elsewhere)."""
        sd = dcp_state_dict()
        return (
            sd.get_optimizer_state_dict(self.module, self.optimizer, options=full_options()) or None
        )

    def extra_state(self) -> dict[str, Any]:
        """Engine state beside the optimizer's (the fp16 loss scale)."""
        return {"scaler": self.scaler.state_dict() if self.scaler is not None else None}

    def save_shards(self, directory: Path) -> None:
        """Write per-process files into the checkpoint folder: under the sharded format this
        process's part of the weights and optimizer state, none under the full one."""
        if self.checkpoint_format == "sharded":
            from pretrainkit.distributed.sharded_checkpoint import save_sharded

            save_sharded(self, Path(directory))

    def load(self, directory: Path, state: dict[str, Any]) -> None:
        """Restore weights, optimizer and engine state from a checkpoint folder.

        Args:
            directory: The checkpoint folder (``model.safetensors`` and any shards).
            state: Its trainer state (``optimizer``, ``scaler``, ``format``).
        """
        if state.get("checkpoint_format") == "sharded":  # every process's part, resharded here
            from pretrainkit.distributed.sharded_checkpoint import load_sharded

            load_sharded(self, Path(directory), state)
            return
        self.load_weights(directory)
        try:
            if state.get("format", 1) == 1:  # older checkpoints: parameter indexes, one process
                self.optimizer.load_state_dict(state["optimizer"])
            else:
                dcp_state_dict().set_optimizer_state_dict(
                    self.module, self.optimizer, state["optimizer"], options=full_options()
                )
                self.per_tensor_updates()
            if self.scaler is not None and state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
        except (KeyError, ValueError, RuntimeError) as error:
            raise CheckpointError(f"{directory}: optimizer state does not fit: {error}") from None

    def load_weights(self, directory: Path) -> None:
        """Load ``model.safetensors``; a damaged file is a CheckpointError naming it."""
        from pretrainkit.model import Model, load_state_strict

        path = Path(directory) / WEIGHTS
        weights = read_safetensors(path)
        if self.tensor_parallel > 1:  # full weights, each process keeps its part
            full: dict[str, Any] = weights_with_aliases(self.model, weights)
            sd = dcp_state_dict()
            sd.set_model_state_dict(
                self.module, full, options=sd.StateDictOptions(full_state_dict=True)
            )
            return
        if isinstance(self.model, Model):
            load_state_strict(self.model, weights, str(path))
        else:  # any other model loads its own way, from a file now known to be readable
            self.model.load_weights(directory)  # type: ignore[operator]


class DDPEngine(Engine):
    """``DistributedDataParallel``: a full replica per process, gradients averaged in backward.

    Gradient accumulation runs the first micro-batches under ``no_sync``, so the all-reduce
    happens once per optimizer step instead of once per micro-batch.
    """

    strategy_name = "ddp"

    def wrap(self, model: nn.Module) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        device = next(model.parameters()).device
        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def accumulating(self, last: bool) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext() if last else self.module.no_sync()  # type: ignore[operator]


def rank0_weights(model: nn.Module, on_meta: bool) -> dict[str, Any]:
    """Rank 0's initial weights in CPU memory, to broadcast once the model is split (an empty
    dict on the other ranks, which may hold the model on the meta device)."""
    import torch.distributed as dist

    if dist.get_rank() != 0:
        return {}
    if on_meta:
        raise ConfigError("rank 0 must build the model with real weights, not on meta")
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def materialize(model: nn.Module, device: torch.device) -> None:
    """``to_empty`` that keeps tied weights tied.

    ``to_empty`` gives each module its own new parameter, so a word table shared with the
    output head (or a decoder's embedding) would become two independent copies here and
    train apart from rank 0's one. The sharing is recorded first and restored after.
    """
    first: dict[int, tuple[nn.Module, str]] = {}
    aliases: list[tuple[nn.Module, str, nn.Module, str]] = []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if id(param) in first:
                aliases.append((module, name, *first[id(param)]))
            else:
                first[id(param)] = (module, name)
    model.to_empty(device=device)
    for module, name, source, source_name in aliases:
        setattr(module, name, getattr(source, source_name))


def broadcast_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers to every process after a model left the meta device.

    ``to_empty`` leaves buffers uninitialised and a state dict carries only the persistent
    ones: the rotary frequencies, sinusoidal tables and the like (``persistent=False``) would
    stay garbage on the other processes.
    """
    import torch.distributed as dist

    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


def weights_with_aliases(model: nn.Module, weights: dict[str, Tensor]) -> dict[str, Tensor]:
    """A saved state (tied copies stored once) with every tied alias pointing at its source."""
    tied = getattr(model, "tied_parameters", None)
    aliases: dict[str, str] = tied() if callable(tied) else {}
    return {**weights, **{a: weights[s] for a, s in aliases.items() if s in weights}}


class FSDPEngine(Engine):
    """FSDP2: ``fully_shard`` on every transformer layer, then on the root.

    Parameters, gradients and optimizer states are sharded over the processes; a layer's
    parameters are all-gathered just before its forward and backward and freed after. With
    bf16 the gathered copies are bf16 (half the traffic) while gradients reduce in fp32.
    Processes other than rank 0 may build the model on the meta device (no memory): the
    weights are materialised shard by shard and rank 0's values broadcast into them.

    Args:
        cpu_offload: Keep the parameter and optimizer shards in CPU memory between uses.
    """

    strategy_name = "fsdp"

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        device: torch.device,
        precision: str,
        cpu_offload: bool = False,
        mesh: Any = None,
        sequence_parallel: bool = False,
    ):
        self.cpu_offload, self.precision = cpu_offload, precision
        super().__init__(model, config, device, precision, mesh, sequence_parallel)

    def wrap(self, model: nn.Module) -> nn.Module:
        from torch.distributed.fsdp import fully_shard

        on_meta = any(p.is_meta for p in model.parameters())
        # Rank 0 holds the real initial weights (in CPU memory); the others receive them after
        # sharding, each only its own shard.
        initial = rank0_weights(model, on_meta)
        options = fsdp_options(self.precision, self.cpu_offload)
        if self.mesh is not None:  # 2-D: TP inside each "dp" column, FSDP across them
            self.split(model, src_data_rank=None)  # rank 0's weights are broadcast below
            options["mesh"] = self.mesh["dp"]
        for layer in transformer_layers(model):
            fully_shard(layer, **options)
        fully_shard(model, **options)
        if on_meta:
            # Sharded parameters are swapped in place, so tied weights stay tied.
            model.to_empty(device="cpu" if self.cpu_offload else self.device)
        sd = dcp_state_dict()
        sd.set_model_state_dict(
            model,
            initial,
            options=sd.StateDictOptions(full_state_dict=True, broadcast_from_rank0=True),
        )
        broadcast_buffers(model)  # every process enters: some may have come from meta
        return model

    def place(self, model: nn.Module) -> nn.Module:
        # fully_shard moves each shard to the device: the whole model never lands on one GPU.
        return model

    def full_state_dict(self) -> dict[str, Tensor] | None:
        sd = dcp_state_dict()
        return cast(dict[str, Tensor], sd.get_model_state_dict(self.module, options=full_options()))

    def load_weights(self, directory: Path) -> None:
        path = Path(directory) / WEIGHTS
        weights: dict[str, Any] = weights_with_aliases(self.model, read_safetensors(path))
        sd = dcp_state_dict()
        sd.set_model_state_dict(
            self.module, weights, options=sd.StateDictOptions(full_state_dict=True)
        )


def fsdp_options(precision: str, cpu_offload: bool = False) -> dict[str, Any]:
    """``fully_shard``'s keywords for a precision: with bf16 / fp16 the gathered parameters
    take that type (half the traffic) while gradients reduce in fp32; CPU offload keeps the
    shards in CPU memory between uses."""
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy

    options: dict[str, Any] = {}
    if precision in ("bf16", "fp16"):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        options["mp_policy"] = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
    if cpu_offload:
        options["offload_policy"] = CPUOffloadPolicy()
    return options


def transformer_layers(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks that sharding and activation checkpointing wrap one by one.

    ``model.encoder.layers`` (and ``model.decoder.layers`` where there is a decoder); a model
    without them is wrapped as one unit.
    """
    layers: dict[int, nn.Module] = {}  # by identity: shared layers (ALBERT) appear once
    for stack in ("encoder", "decoder"):
        blocks = getattr(getattr(model, stack, None), "layers", None)
        if isinstance(blocks, nn.ModuleList):
            layers.update((id(block), block) for block in blocks)
    return list(layers.values())


def split_grad_norm(params: list[nn.Parameter], max_norm: float | None) -> Tensor:
    """The global gradient norm of parameters of several layouts, clipping when asked.

    Under TP (and FSDP on top of it) some gradients are DTensors split over the "tp" (and
    "dp") processes, on different meshes, while the replicated ones may be plain tensors that
    every process holds whole. PyTorch's ``clip_grad_norm_`` cannot stack norms of mixed
    layouts, so each group of one layout gets its norm (``full_tensor``: summed over the
    processes that hold its parts) and the groups are combined here.
    """
    from torch.distributed.tensor import DTensor

    groups: dict[Any, list[Tensor]] = {}
    for param in params:
        grad = param.grad
        if grad is None:
            continue
        key = (grad.device_mesh, grad.placements) if isinstance(grad, DTensor) else None
        groups.setdefault(key, []).append(grad)
    if not groups:
        return torch.zeros(())
    # Every process has the same groups in the same order (same model, same plan), so the
    # collectives of full_tensor match up.
    norms = [full_tensor(nn.utils.get_total_norm(grads)).float().cpu() for grads in groups.values()]
    total = torch.linalg.vector_norm(torch.stack(norms))
    if max_norm is not None:
        coefficient = float(max_norm / (total + 1e-6))
        if coefficient < 1.0:
            for grads in groups.values():
                for grad in grads:
                    grad.mul_(coefficient)
    return total
