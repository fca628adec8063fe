"""Engines: the one interface through which the training loop uses a distribution strategy.

The loop calls ``backward``, ``step``, ``accumulating`` and the state-dict methods and never asks
which engine it holds. ``Engine`` itself is one process; ``DDPEngine`` and ``FSDPEngine`` wrap
PyTorch's engines; ``distributed.zero.DeepSpeedEngine`` wraps DeepSpeed ZeRO.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor, nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from pretrainkit.errors import CheckpointError, ConfigError
from pretrainkit.fileio import read_safetensors

if TYPE_CHECKING:
    from pretrainkit.training.config import TrainConfig

# Checkpoints hold the full (unsharded) optimizer state keyed by parameter name, gathered on
# rank 0, rather than torch.distributed.checkpoint's one-file-per-rank layout: one format for
# single, DDP and FSDP, readable by one process and resumable under another of these strategies.
# Its cost is rank 0's host memory (8 bytes per parameter for AdamW's two moments); past that,
# sharded DCP checkpoints are the way (see docs/DISTRIBUTED.md).
FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)
WEIGHTS = "model.safetensors"


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

    def __init__(self, model: nn.Module, config: TrainConfig, device: torch.device, precision: str):
        # Imported here: pretrainkit.training imports this package.
        from pretrainkit.training.optim import build_optimizer
        from pretrainkit.training.precision import grad_scaler

        self.device = device
        self.model = self.place(model)
        self.module = self.wrap(self.model)
        self.optimizer = build_optimizer(self.module, config)
        self.scaler = grad_scaler(precision, device)
        self.params = [p for p in self.module.parameters() if p.requires_grad]

    def place(self, model: nn.Module) -> nn.Module:
        """Move the model to the training device (before ``wrap``)."""
        return model.to(self.device)

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module the loop calls; the model itself here."""
        return model

    def accumulating(self, last: bool) -> contextlib.AbstractContextManager:
        """Context of one micro-batch's forward and backward; ``last`` ends the step."""
        return contextlib.nullcontext()

    def backward(self, loss: Tensor) -> None:
        """Back-propagate a micro-batch's loss (already divided by the accumulation steps)."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def grad_norm(self, max_norm: float | None) -> Tensor:
        """The global gradient L2 norm, clipping to ``max_norm`` when given."""
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

        None means ``model.save`` can write its own ``state_dict`` (always the case here).
        """
        return None

    def optimizer_state(self) -> dict[str, Any] | None:
        """The full optimizer state keyed by parameter name (on rank 0; None elsewhere)."""
        return get_optimizer_state_dict(self.module, self.optimizer, options=FULL) or None

    def extra_state(self) -> dict[str, Any]:
        """Engine state beside the optimizer's (the fp16 loss scale)."""
        return {"scaler": self.scaler.state_dict() if self.scaler is not None else None}

    def save_shards(self, directory: Path) -> None:
        """Write per-process files into the checkpoint folder (none here)."""

    def load(self, directory: Path, state: dict[str, Any]) -> None:
        """Restore weights, optimizer and engine state from a checkpoint folder.

        Args:
            directory: The checkpoint folder (``model.safetensors`` and any shards).
            state: Its trainer state (``optimizer``, ``scaler``, ``format``).
        """
        self.load_weights(directory)
        try:
            if state.get("format", 1) == 1:  # older checkpoints: parameter indexes, one process
                self.optimizer.load_state_dict(state["optimizer"])
            else:
                set_optimizer_state_dict(
                    self.module, self.optimizer, state["optimizer"], options=FULL
                )
            if self.scaler is not None and state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
        except (KeyError, ValueError, RuntimeError) as error:
            raise CheckpointError(f"{directory}: optimizer state does not fit: {error}") from None

    def load_weights(self, directory: Path) -> None:
        """Load ``model.safetensors``; a damaged file is a CheckpointError naming it."""
        from pretrainkit.model import Model, load_state_strict

        path = Path(directory) / WEIGHTS
        weights = read_safetensors(path)
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
    ):
        self.cpu_offload, self.precision = cpu_offload, precision
        super().__init__(model, config, device, precision)

    def wrap(self, model: nn.Module) -> nn.Module:
        import torch.distributed as dist
        from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

        on_meta = any(p.is_meta for p in model.parameters())
        # Rank 0 holds the real initial weights (in CPU memory); the others receive them after
        # sharding, each only its own shard.
        initial: dict[str, Any] = {}
        if dist.get_rank() == 0:
            if on_meta:
                raise ConfigError(
                    "FSDP: rank 0 must build the model with real weights, not on meta"
                )
            initial = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        options: dict[str, Any] = {}
        if self.precision in ("bf16", "fp16"):
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
            options["mp_policy"] = MixedPrecisionPolicy(
                param_dtype=dtype, reduce_dtype=torch.float32
            )
        if self.cpu_offload:
            options["offload_policy"] = CPUOffloadPolicy()
        for layer in transformer_layers(model):
            fully_shard(layer, **options)
        fully_shard(model, **options)
        if on_meta:
            # Sharded parameters are swapped in place, so tied weights stay tied.
            model.to_empty(device="cpu" if self.cpu_offload else self.device)
        set_model_state_dict(
            model,
            initial,
            options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True),
        )
        return model

    def place(self, model: nn.Module) -> nn.Module:
        # fully_shard moves each shard to the device: the whole model never lands on one GPU.
        return model

    def full_state_dict(self) -> dict[str, Tensor] | None:
        return cast(dict[str, Tensor], get_model_state_dict(self.module, options=FULL))

    def load_weights(self, directory: Path) -> None:
        path = Path(directory) / WEIGHTS
        weights: dict[str, Any] = weights_with_aliases(self.model, read_safetensors(path))
        set_model_state_dict(self.module, weights, options=StateDictOptions(full_state_dict=True))


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
