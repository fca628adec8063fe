"""DeepSpeed ZeRO behind the ``Engine`` interface, from a config generated from ours."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from pretrainkit.distributed.engines import Engine
from pretrainkit.errors import CheckpointError, ConfigError
from pretrainkit.fileio import read_safetensors
from pretrainkit.training.config import TrainConfig
from pretrainkit.training.optim import build_optimizer

logger = logging.getLogger(__name__)

SHARDS = "deepspeed"  # sub-folder of a checkpoint with the per-rank optimizer shards
ZERO_STATE = "zero.json"  # our copy: what every process shares (groups, counters, loss scale)
ZERO_FORMAT = "pretrainkit-zero"
TAG = "state"  # DeepSpeed's own checkpoint (pickle files) under SHARDS/TAG: older ZeRO-3 runs
_COUNTERS = ("global_steps", "global_samples", "skipped_steps", "micro_steps")
FLATS_1_2 = "single_partition_of_fp32_groups"  # ZeRO-1/2's fp32 partitions, one per group


def zero_shard_file(rank: int) -> str:
    """This process's fp32 master weights and Adam moments, relative to the checkpoint."""
    return f"{SHARDS}/zero-rank-{rank:05d}.safetensors"


def deepspeed_config(
    config: TrainConfig,
    micro_batch: int,
    world: int,
    stage: int,
    cpu_offload: bool,
    whole_up_to: int | None = None,
) -> dict[str, Any]:
    """The DeepSpeed config equivalent to our training options.

    The optimizer (our AdamW), the schedule and autocast stay ours; DeepSpeed gets the ZeRO
    stage, the batch arithmetic and clipping. Weights stay fp32 (no ``bf16``/``fp16`` section):
    bf16 runs under the loop's autocast like every other strategy.

    Args:
        whole_up_to: ZeRO-3 keeps parameters of at most this many elements whole on every
            process instead of partitioning them (``stage3_param_persistence_threshold``;
            None: DeepSpeed's default, 100,000).
    """
    zero: dict[str, Any] = {"stage": stage}
    if cpu_offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    if stage == 3 and whole_up_to is not None:
        zero["stage3_param_persistence_threshold"] = whole_up_to
    return {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": config.accumulate,
        "train_batch_size": micro_batch * config.accumulate * world,
        "gradient_clipping": config.clip_grad or 0.0,
        "zero_optimization": zero,
        # Our AdamW is not DeepSpeed's; with offload DeepSpeed would insist on its CPU Adam.
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }


class DeepSpeedEngine(Engine):
    """DeepSpeed ZeRO-1/2/3: DeepSpeed owns the optimizer step, clipping and the shards.

    ZeRO-1 shards the optimizer states over the processes, ZeRO-2 also the gradients, ZeRO-3
    also the parameters. Checkpoints hold the consolidated weights (``model.safetensors``) and
    each process's optimizer partition (fp32 master weights and moments) as safetensors plus
    JSON (``deepspeed/``): no pickle is read on resume. DeepSpeed's own checkpoint files are
    pickles (reading them can run code); those that older ZeRO-3 runs wrote resume only with
    ``trust_checkpoint``.

    Args:
        micro_batch: Sequences per micro-batch on each process (for DeepSpeed's batch check).
        stage: The ZeRO stage.
        cpu_offload: Offload optimizer states (and ZeRO-3 parameters) to CPU memory.
    """

    strategy_name = "deepspeed"

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        device: torch.device,
        precision: str,
        micro_batch: int,
        stage: int,
        cpu_offload: bool = False,
    ):
        if precision == "fp16":  # workflows refuse it earlier (check_run)
            raise ConfigError("precision 'fp16' is not supported with strategy 'deepspeed'")
        import deepspeed
        import torch.distributed as dist

        if dist.get_world_size() == 1:
            # DeepSpeed insists on a launcher's LOCAL_RANK even in a process group of one.
            os.environ.setdefault("LOCAL_RANK", "0")

        self.device, self.precision = device, precision
        self.model = model.to(device)
        self.scaler = None
        world = dist.get_world_size()
        self.stage = stage
        ds_config = deepspeed_config(
            config, micro_batch, world, stage, cpu_offload, whole_up_to=largest_vector(model)
        )
        client_optimizer = build_optimizer(self.model, config)
        self.ds, _, _, _ = deepspeed.initialize(
            model=self.model, optimizer=client_optimizer, config=ds_config
        )
        if stage == 3:
            expose_dataclass_outputs(self.model)
        self.module = self.ds
        # The schedule drives our AdamW's param groups, which ZeRO keeps and steps.
        self.optimizer = client_optimizer
        self.params = [p for p in self.model.parameters() if p.requires_grad]

    def backward(self, loss: Tensor) -> None:
        self.ds.backward(loss, scale_wrt_gas=False)  # the loop already divided by accumulate
        if not self.ds.is_gradient_accumulation_boundary():
            self.ds.step()  # DeepSpeed counts micro-steps here; no update before the boundary

    def step(self, max_norm: float | None) -> tuple[float, bool]:
        self.ds.step()  # clips (gradient_clipping), updates, zeroes; skips non-finite gradients
        norm = self.ds.get_global_grad_norm()
        norm = float(norm) if norm is not None else math.nan
        return norm, bool(self.ds.was_step_applied())

    def skip(self) -> None:
        # The micro-step count must still reach the boundary; a non-finite loss is made a
        # skipped update by zeroing before DeepSpeed steps.
        self.ds.zero_grad()
        self.ds.step()

    def zero_grad(self) -> None:
        self.ds.zero_grad()

    def accumulating(self, last: bool) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()  # DeepSpeed reduces at its own accumulation boundary

    def full_state_dict(self) -> dict[str, Tensor] | None:
        if self.stage < 3:
            return None  # ZeRO-1/2 keep full parameters on every process
        # Collective: gathers every partitioned parameter onto rank 0.
        state = self.ds._zero3_consolidated_16bit_state_dict()
        return {k: v.detach().cpu() for k, v in state.items()} if state else None

    def optimizer_state(self) -> dict[str, Any] | None:
        return None  # each process's partition goes to deepspeed/ (save_shards)

    def extra_state(self) -> dict[str, Any]:
        return {"deepspeed_stage": self.stage}

    def save_shards(self, directory: Path) -> None:
        import torch.distributed as dist

        rank = dist.get_rank()
        optimizer = self._zero_optimizer()
        (Path(directory) / SHARDS).mkdir(exist_ok=True)
        state = self._optimizer_state_dict()  # our AdamW over this process's flat partitions
        tensors = {
            f"fp32.{group}": flat.detach().cpu().contiguous()
            for group, flat in enumerate(self._flat_partitions())
        }
        for index, values in state["state"].items():
            for key, value in values.items():
                if not torch.is_tensor(value):
                    raise CheckpointError(
                        f"optimizer state {key!r} is {type(value).__name__}, not a tensor; "
                        "cannot be saved as safetensors"
                    )
                tensors[f"state.{index}.{key}"] = value.detach().cpu().contiguous()
        save_file(tensors, str(Path(directory) / zero_shard_file(rank)))
        if rank == 0:
            scaler = optimizer.loss_scaler
            shared = {
                "format": ZERO_FORMAT,
                "stage": self.stage,
                "world_size": dist.get_world_size(),
                "param_groups": state["param_groups"],
                "counters": {name: int(getattr(self.ds, name)) for name in _COUNTERS},
                "loss_scaler": {
                    k: v for k, v in vars(scaler).items() if isinstance(v, (bool, int, float))
                },
            }
            try:
                text = json.dumps(shared, indent=1)
            except TypeError as error:
                raise CheckpointError(f"optimizer settings are not JSON: {error}") from None
            (Path(directory) / SHARDS / ZERO_STATE).write_text(text, encoding="utf-8")

    def load(self, directory: Path, state: dict[str, Any]) -> None:
        directory = Path(directory)
        if state.get("deepspeed_stage") != self.stage:
            raise CheckpointError(
                f"{directory}: written with ZeRO stage {state.get('deepspeed_stage')}, resumed "
                f"with stage {self.stage}; use --zero-stage {state.get('deepspeed_stage')}"
            )
        if (directory / SHARDS / ZERO_STATE).is_file():
            self._load_own(directory)
        elif (directory / SHARDS / TAG).is_dir():
            self._load_deepspeed_pickles(directory)
        else:
            raise CheckpointError(
                f"{directory}: no DeepSpeed optimizer shards ({SHARDS}/); this checkpoint was "
                "not written with strategy deepspeed. Its weights load with pretrainkit.load, "
                "but resuming needs the strategy that wrote it"
            )

    def _zero_optimizer(self) -> Any:
        optimizer = self.ds.optimizer
        flats = "fp32_partitioned_groups_flat" if self.stage == 3 else FLATS_1_2
        if not hasattr(optimizer, flats) or not hasattr(optimizer, "loss_scaler"):
            raise CheckpointError(
                f"DeepSpeed's ZeRO-{self.stage} optimizer ({type(optimizer).__name__}) has no "
                "fp32 partitions where pretrainkit expects them; this DeepSpeed version is not "
                "supported for checkpoints"
            )
        return optimizer

    def _flat_partitions(self) -> list[Tensor]:
        """This process's fp32 master weights: one flat tensor per (sub-)group, the tensors
        our AdamW steps and keeps its moments for."""
        optimizer = self._zero_optimizer()
        if self.stage == 3:
            return list(optimizer.fp32_partitioned_groups_flat)
        return list(getattr(optimizer, FLATS_1_2))

    def _optimizer_state_dict(self) -> dict[str, Any]:
        """Our AdamW's ``state_dict`` over the flat partitions.

        ZeRO-3 hands the flat partitions to our AdamW's groups only while it steps; its own
        ``state_dict`` puts them back for the moment it reads the optimizer's.
        """
        if self.stage < 3:
            return self.optimizer.state_dict()
        from deepspeed.checkpoint.constants import OPTIMIZER_STATE_DICT

        state: dict[str, Any] = self._zero_optimizer().state_dict()[OPTIMIZER_STATE_DICT]
        return state

    def _load_own(self, directory: Path) -> None:
        """Resume from our safetensors + JSON copy: weights, fp32 masters, moments, counters."""
        import torch.distributed as dist

        path = directory / SHARDS / ZERO_STATE
        try:
            shared = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CheckpointError(f"{path}: unreadable: {error}") from None
        if not isinstance(shared, dict) or shared.get("format") != ZERO_FORMAT:
            raise CheckpointError(f"{path}: not a pretrainkit ZeRO state")
        if shared.get("world_size") != dist.get_world_size():
            raise CheckpointError(
                f"{path}: written by {shared.get('world_size')} process(es), resumed with "
                f"{dist.get_world_size()}; each process owns its part of the optimizer state"
            )
        optimizer = self._zero_optimizer()
        if self.stage < 3:  # every process holds all the weights; ZeRO-3's come from the flats
            self.load_weights(directory)
        shard = directory / zero_shard_file(dist.get_rank())
        tensors = read_safetensors(shard)
        flats = self._flat_partitions()
        try:
            groups = len(self.optimizer.param_groups)  # ZeRO-3 may split one into several flats
            optimizer_state = _optimizer_state(tensors, shared["param_groups"], groups)
            counters = {k: int(v) for k, v in shared["counters"].items() if k in _COUNTERS}
            scaling = {
                k: v
                for k, v in shared["loss_scaler"].items()
                if isinstance(v, (bool, int, float)) and hasattr(optimizer.loss_scaler, k)
            }
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise CheckpointError(f"{path} / {shard.name}: malformed: {error!r}") from None
        saved_flats = []
        for group, flat in enumerate(flats):
            saved = tensors.get(f"fp32.{group}")
            if saved is None or saved.shape != flat.shape:
                found = "none" if saved is None else tuple(saved.shape)
                raise CheckpointError(
                    f"{shard}: fp32 partition {group} is {found}, this model's is "
                    f"{tuple(flat.shape)}; resume the same model on the same processes"
                )
            saved_flats.append(saved)
        for current, saved in zip(self.optimizer.param_groups, optimizer_state["param_groups"]):
            for key, value in saved.items():  # JSON turned tuples (betas) into lists
                if isinstance(current.get(key), tuple) and isinstance(value, list):
                    saved[key] = tuple(value)
        for name, value in scaling.items():
            setattr(optimizer.loss_scaler, name, value)
        try:
            if self.stage == 3:
                self._load_zero3(optimizer, optimizer_state, saved_flats)
            else:
                with torch.no_grad():
                    for flat, saved in zip(flats, saved_flats):
                        flat.copy_(saved)
                self.optimizer.load_state_dict(optimizer_state)
        except (KeyError, ValueError, RuntimeError, TypeError) as error:
            raise CheckpointError(f"{shard}: optimizer state does not fit: {error}") from None
        for name, count in counters.items():
            setattr(self.ds, name, count)

    def _load_zero3(
        self, optimizer: Any, optimizer_state: dict[str, Any], flats: list[Tensor]
    ) -> None:
        """Hand our tensors to ZeRO-3's own loader, as DeepSpeed's ``load_checkpoint`` would
        after unpickling them: it restores the fp32 partitions and the moments, rebuilds each
        parameter's partition from them, and (between the prologue and the epilogue)
        re-gathers the parameters it keeps whole on every process."""
        import torch.distributed as dist
        from deepspeed.checkpoint.constants import (
            FP32_FLAT_GROUPS,
            LOSS_SCALER,
            OPTIMIZER_STATE_DICT,
        )

        state = {
            LOSS_SCALER: optimizer.loss_scaler,  # ours, its numbers already restored
            "dynamic_loss_scale": optimizer.dynamic_loss_scale,
            "overflow": False,  # a checkpoint is written after a completed step
            OPTIMIZER_STATE_DICT: optimizer_state,
            FP32_FLAT_GROUPS: flats,
        }
        optimizer.checkpoint_event_prologue()
        # One entry per process; each reads its own (all are this process's state).
        optimizer.load_state_dict([state] * dist.get_world_size(), load_optimizer_states=True)
        optimizer.checkpoint_event_epilogue()

    def _load_deepspeed_pickles(self, directory: Path) -> None:
        if not self.trust_checkpoint:
            raise CheckpointError(
                f"{directory}: holds only DeepSpeed's own optimizer files ({SHARDS}/{TAG}), "
                "which DeepSpeed reads with pickle: a run folder from someone else could run "
                "code that way. If you wrote this run yourself, resume with --trust-checkpoint"
            )
        logger.warning("%s: loading DeepSpeed's pickle files (--trust-checkpoint)", directory)
        path, _ = self.ds.load_checkpoint(
            str(directory / SHARDS), tag=TAG, load_lr_scheduler_states=False
        )
        if path is None:
            raise CheckpointError(f"{directory}: DeepSpeed could not load {SHARDS}/{TAG}")


DEEPSPEED_WHOLE_UP_TO = 100_000  # DeepSpeed's default stage3_param_persistence_threshold


def largest_vector(model: nn.Module) -> int:
    """Elements of the model's largest 1-D parameter (a norm's or a bias), at most DeepSpeed's
    default persistence threshold.

    As ZeRO-3's persistence threshold it keeps every vector whole on every process and
    partitions every larger matrix, whatever the model's size. DeepSpeed's default splits
    BERT-base (largest vector: the MLM decoder's bias, 30,522) and LLaMA-7B (4,096) the same
    way, but keeps a small model entirely whole: its partitioning would go untried in small
    runs and in the tests. The cap keeps a large-vocabulary head's bias from keeping more
    matrices whole than DeepSpeed would.
    """
    largest = max((p.numel() for p in model.parameters() if p.dim() <= 1), default=0)
    return min(largest, DEEPSPEED_WHOLE_UP_TO)


class _HandledOutputsFilter(logging.Filter):
    """Drops DeepSpeed's "unknown inputs or outputs type" warning for the given types."""

    def __init__(self, types: tuple[str, ...]):
        super().__init__()
        self.types = types

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "unknown inputs or outputs type" not in message or not any(
            name in message for name in self.types
        )


def expose_dataclass_outputs(model: nn.Module) -> None:
    """Let ZeRO-3 see the tensors inside our modules' dataclass outputs.

    ZeRO-3 gathers a module's parameters for its backward from a hook on the tensors the module
    returned (a forward hook wraps each in DeepSpeed's pre-backward function). DeepSpeed looks
    for those tensors only in tensors, tuples, lists and dicts; our targets return
    ``TargetOutput`` and the model ``ModelOutput``, dataclasses, so that hook never fired for
    them, while the hook on their inputs did: DeepSpeed 0.19 then stops in the first backward
    ("active_backward_submodules is empty"), and a head with parameters of its own would have
    run its backward on released (empty) parameters. This forward hook, registered after
    DeepSpeed's, does for the fields of a dataclass output what DeepSpeed does for a tuple.
    """
    from deepspeed.runtime.zero.utils import apply_to_tensors_only

    def hook(module: nn.Module, inputs: Any, output: Any) -> Any:
        if not dataclasses.is_dataclass(output) or isinstance(output, type):
            return None
        # DeepSpeed's autograd Function, set on every module it registered.
        pre_backward = module.__dict__["pre_bwd_fn"].apply
        changes = {
            field.name: apply_to_tensors_only(pre_backward, getattr(output, field.name))
            for field in dataclasses.fields(output)
            if field.init
        }
        return dataclasses.replace(output, **changes)

    from pretrainkit.model import ModelOutput
    from pretrainkit.targets.base import TargetOutput

    # DeepSpeed still warns, once, that it cannot see into them (its hook runs before ours);
    # for these two that warning is now wrong.
    handled = tuple(
        f"<class '{t.__module__}.{t.__qualname__}'>" for t in (ModelOutput, TargetOutput)
    )
    deepspeed_logger = logging.getLogger("DeepSpeed")
    if not any(isinstance(f, _HandledOutputsFilter) for f in deepspeed_logger.filters):
        deepspeed_logger.addFilter(_HandledOutputsFilter(handled))
    for module in model.modules():
        if "pre_bwd_fn" not in module.__dict__:
            raise ConfigError(
                f"DeepSpeed did not register its ZeRO-3 backward hooks on {type(module).__name__}"
                "; this DeepSpeed version is not supported with --zero-stage 3"
            )
        module.register_forward_hook(hook)


def _optimizer_state(
    tensors: dict[str, Tensor], param_groups: list[dict[str, Any]], groups: int
) -> dict[str, Any]:
    """A torch optimizer ``state_dict`` from our tensors (``state.<index>.<key>``) and groups."""
    if not isinstance(param_groups, list) or len(param_groups) != groups:
        raise ValueError(f"{groups} parameter groups expected")
    if not all(isinstance(group, dict) for group in param_groups):
        raise TypeError("a parameter group is not a JSON object")
    state: dict[int, dict[str, Tensor]] = {}
    for name, tensor in tensors.items():
        kind, _, rest = name.partition(".")
        if kind == "state":
            index, _, key = rest.partition(".")
            state.setdefault(int(index), {})[key] = tensor
    return {"state": state, "param_groups": param_groups}
