"""DeepSpeed ZeRO behind the ``Engine`` interface, from a config generated from ours."""

from __future__ import annotations

import contextlib
import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pretrainkit.distributed.engines import Engine
from pretrainkit.errors import CheckpointError, ConfigError
from pretrainkit.training.config import TrainConfig
from pretrainkit.training.optim import build_optimizer

logger = logging.getLogger(__name__)

SHARDS = "deepspeed"  # sub-folder of a checkpoint with DeepSpeed's per-rank optimizer shards
TAG = "state"


def deepspeed_config(
    config: TrainConfig, micro_batch: int, world: int, stage: int, cpu_offload: bool
) -> dict[str, Any]:
    """The DeepSpeed config equivalent to our training options.

    The optimizer (our AdamW), the schedule and autocast stay ours; DeepSpeed gets the ZeRO
    stage, the batch arithmetic and clipping. Weights stay fp32 (no ``bf16``/``fp16`` section):
    bf16 runs under the loop's autocast like every other strategy.
    """
    zero: dict[str, Any] = {"stage": stage}
    if cpu_offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
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
    also the parameters. Checkpoints keep DeepSpeed's own per-rank files (in ``deepspeed/``) for
    resuming, and the consolidated weights in our safetensors format for everything else.

    Args:
        micro_batch: Sequences per micro-batch on each process (for DeepSpeed's batch check).
        stage: The ZeRO stage.
        cpu_offload: Offload optimizer states (and ZeRO-3 parameters) to CPU memory.
    """

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

        if stage == 3:
            logger.warning(
                "ZeRO-3 is not covered by pretrainkit's tests: on CPU (DeepSpeed 0.19) its first "
                "backward fails with the tied MLM/LM head; strategy fsdp shards the same way"
            )

        self.device = device
        self.model = model.to(device)
        self.scaler = None
        world = dist.get_world_size()
        self.stage = stage
        ds_config = deepspeed_config(config, micro_batch, world, stage, cpu_offload)
        client_optimizer = build_optimizer(self.model, config)
        self.ds, _, _, _ = deepspeed.initialize(
            model=self.model, optimizer=client_optimizer, config=ds_config
        )
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
        return None  # in DeepSpeed's own shards (save_shards)

    def extra_state(self) -> dict[str, Any]:
        return {"deepspeed_stage": self.stage}

    def save_shards(self, directory: Path) -> None:
        self.ds.save_checkpoint(str(Path(directory) / SHARDS), tag=TAG, save_latest=False)

    def load(self, directory: Path, state: dict[str, Any]) -> None:
        if not (Path(directory) / SHARDS / TAG).is_dir():
            raise CheckpointError(
                f"{directory}: no DeepSpeed optimizer shards ({SHARDS}/{TAG}); this checkpoint "
                "was not written with strategy deepspeed. Its weights load with "
                "pretrainkit.load, but resuming needs the strategy that wrote it"
            )
        if state.get("deepspeed_stage") != self.stage:
            raise CheckpointError(
                f"{directory}: written with ZeRO stage {state.get('deepspeed_stage')}, resumed "
                f"with stage {self.stage}; use --zero-stage {state.get('deepspeed_stage')}"
            )
        # DeepSpeed reads its shards with pickle (torch.load weights_only=False): only resume
        # checkpoints this run wrote, as for any DeepSpeed checkpoint.
        path, _ = self.ds.load_checkpoint(
            str(Path(directory) / SHARDS), tag=TAG, load_lr_scheduler_states=False
        )
        if path is None:
            raise CheckpointError(f"{directory}: DeepSpeed could not load {SHARDS}/{TAG}")
