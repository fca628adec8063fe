"""The one training loop: pre-training, fine-tuning and distillation differ only in the model."""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from pretrainkit.distributed import is_main_process, parallelize
from pretrainkit.errors import CheckpointError, ConfigError, PretrainkitError
from pretrainkit.training import checkpoint as ckpt
from pretrainkit.training.config import TrainConfig
from pretrainkit.training.optim import build_optimizer, build_scheduler
from pretrainkit.training.precision import autocast, grad_scaler, resolve_precision
from pretrainkit.training.progress import ProgressBar
from pretrainkit.training.runlog import RunLog
from pretrainkit.training.stats import StepResult, Window, count_tokens

logger = logging.getLogger(__name__)


class BatchSource(Protocol):
    """What the trainer pulls batches from (see docs/INTERFACES.md)."""

    def next_batch(self) -> dict[str, Tensor]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Trainer:
    """Trains any model whose ``forward(**batch)`` returns an output with ``.loss``.

    Args:
        model: Returns ``.loss`` (scalar) and ``.metrics`` (dict of scalar tensors) from
            ``model(**batch)``; has ``save(directory)`` and ``load_weights(directory)``.
        train_data: A batch source (``next_batch``, ``state_dict``, ``load_state_dict``).
        config: Steps, optimizer, schedule, precision, checkpointing and logging.
        out_dir: The run folder (metrics.jsonl, tb/, checkpoints/, model/, plots/).
        evaluate: Called as ``evaluate(model)`` in eval mode without gradients, every
            ``eval_every`` steps and at the end; returns ``{name: number}``, logged as
            ``dev/<name>``. It runs on every process; only the main process logs.
        resume: Continue from the latest complete checkpoint in ``out_dir``. When there is
            none, a warning is logged and a fresh run starts (so a preempted job can always be
            relaunched with the same command).
        strategy: Distribution strategy handed to ``pretrainkit.distributed.parallelize``.

    Raises:
        ConfigError: Bad precision for the device, unknown strategy, or (``resume=False``)
            ``out_dir`` already holds checkpoints of another run.
    """

    def __init__(
        self,
        model: nn.Module,
        train_data: BatchSource,
        config: TrainConfig,
        out_dir: str | Path,
        evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
        resume: bool = False,
        strategy: str = "single",
    ):
        if not isinstance(config, TrainConfig):
            raise ConfigError(f"config must be a TrainConfig, got {type(config).__name__}")
        self.config = config
        self.run_dir = Path(out_dir)
        self.device = config.resolved_device()
        self.precision = resolve_precision(config.precision, self.device)
        self.model = model.to(self.device)
        self.wrapped = parallelize(self.model, strategy)  # the only backend-specific call
        self.train_data = train_data
        self.evaluate = evaluate
        self.resume = resume
        self.is_main = is_main_process()
        self.optimizer = build_optimizer(self.wrapped, config)
        self.scheduler = build_scheduler(self.optimizer, config)
        self.scaler = grad_scaler(self.precision, self.device)
        self._params = [p for p in self.wrapped.parameters() if p.requires_grad]
        self.step = 0
        self.skipped_steps = 0
        self.tokens_seen = 0
        self.last_eval: dict[str, float] = {}
        self._elapsed_before = 0.0
        self._saved_step = -1
        self._eval_step = -1

    # -- setup -------------------------------------------------------------------------

    def _start(self) -> int | None:
        """Resume or start fresh; returns the checkpoint step resumed from, or None."""
        latest = ckpt.latest_checkpoint(self.run_dir)
        if self.is_main:
            ckpt.remove_leftovers(self.run_dir / "checkpoints")
            ckpt.remove_leftovers(self.run_dir)
        if latest is not None and not self.resume:
            raise ConfigError(
                f"{self.run_dir} already holds checkpoints (latest {latest.name}); pass "
                "resume=True to continue that run, or choose another out_dir"
            )
        if latest is None:
            if self.resume:
                logger.warning(
                    "resume requested but %s has no checkpoint: starting fresh", self.run_dir
                )
            seed = self.config.seed
            torch.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed)
            return None
        self._load(latest)
        logger.info("resumed from %s (step %d)", latest, self.step)
        return self.step

    def _load(self, directory: Path) -> None:
        state = ckpt.load_trainer_state(directory)
        self.model.load_weights(directory)  # type: ignore[operator]
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if self.scaler is not None and state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
        except (KeyError, ValueError) as error:
            raise CheckpointError(f"{directory}: optimizer state does not fit: {error}") from None
        self.train_data.load_state_dict(ckpt.load_data_state(directory))
        counters = state.get("counters", {})
        self.step = int(state["step"])
        self.skipped_steps = int(counters.get("skipped_steps", 0))
        self.tokens_seen = int(counters.get("tokens_seen", 0))
        self._elapsed_before = float(counters.get("elapsed", 0.0))
        self._saved_step = self._eval_step = self.step
        # Last: nothing after this may draw random numbers before the first resumed step.
        ckpt.set_rng_state(state["rng"])

    # -- the loop ------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        """Train to ``config.steps``, logging, evaluating and checkpointing on the way.

        Returns:
            ``steps``, ``final_loss`` (mean loss of the last logged window), ``tokens_per_s``
            (over this process's run, first logged window excluded when there are several),
            ``skipped_steps``, ``model_dir``, ``run_dir``, ``last_eval``.

        Raises:
            PretrainkitError: A non-finite loss or gradient norm (unless ``skip_nonfinite``);
                the message names the step. No checkpoint or model is written for it.
        """
        cfg = self.config
        resumed_from = self._start()
        log = RunLog(self.run_dir, keep_until=resumed_from, enabled=self.is_main)
        bar = ProgressBar(cfg.steps, self.step, enabled=cfg.progress and self.is_main)
        windows: list[tuple[int, float]] = []
        window = Window()
        final_loss = None
        started = time.perf_counter()
        self.wrapped.train()
        try:
            while self.step < cfg.steps:
                result = self._train_step()
                self.step += 1
                self.tokens_seen += result.tokens
                window.add(result)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    elapsed = self._elapsed_before + time.perf_counter() - started
                    record = window.record(self.step, result.lr, elapsed, self.skipped_steps)
                    log.write(record)
                    final_loss = record["loss"]
                    windows.append((window.tokens, window.seconds))
                    window = Window()
                speed = result.tokens / result.seconds if result.seconds > 0 else 0.0
                bar.update(self.step, result.loss, result.lr, speed)
                if cfg.eval_every and self.step % cfg.eval_every == 0:
                    self._evaluate(log)
                if cfg.save_every and self.step % cfg.save_every == 0:
                    self._save(started)
            if self.evaluate is not None and self._eval_step != self.step:
                self._evaluate(log)
            if self._saved_step != self.step:
                self._save(started)
            model_dir = self.run_dir / "model"
            if self.is_main:
                ckpt.save_model(self.model, model_dir)
        finally:
            bar.close()
            log.close()
        timed = windows[1:] if len(windows) > 1 else windows
        seconds = sum(s for _, s in timed)
        return {
            "steps": self.step,
            "final_loss": final_loss,
            "tokens_per_s": sum(t for t, _ in timed) / seconds if seconds > 0 else 0.0,
            "skipped_steps": self.skipped_steps,
            "model_dir": str(model_dir),
            "run_dir": str(self.run_dir),
            "last_eval": dict(self.last_eval),
        }

    def _train_step(self) -> StepResult:
        """One optimizer step over ``accumulate`` micro-batches."""
        cfg = self.config
        started = time.perf_counter()
        lr = float(self.scheduler.get_last_lr()[0])
        loss_sum = torch.zeros((), device=self.device)
        metrics: dict[str, Tensor] = {}
        tokens = 0
        for micro in range(cfg.accumulate):
            batch = self.train_data.next_batch()
            tokens += count_tokens(batch)
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            # Wrappers that all-reduce on backward (DDP) need it only on the last micro-batch.
            skip_sync = micro < cfg.accumulate - 1 and hasattr(self.wrapped, "no_sync")
            no_sync = self.wrapped.no_sync() if skip_sync else contextlib.nullcontext()  # type: ignore[operator]
            with no_sync:
                with autocast(self.precision, self.device):
                    output = self.wrapped(**batch)
                if getattr(output, "loss", None) is None:
                    raise PretrainkitError(
                        "the model returned no loss; does the batch have labels?"
                    )
                loss = output.loss.float() / cfg.accumulate
                (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            loss_sum += loss.detach()
            for name, value in (getattr(output, "metrics", None) or {}).items():
                value = value.detach().float() / cfg.accumulate
                metrics[name] = metrics[name] + value if name in metrics else value
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if cfg.clip_grad is not None:
            grad_norm = nn.utils.clip_grad_norm_(self._params, cfg.clip_grad)
        else:
            grad_norm = nn.utils.get_total_norm(
                [p.grad for p in self._params if p.grad is not None]
            )
        # One host sync per step, for both numbers.
        loss_value, norm_value = torch.stack([loss_sum, grad_norm.float()]).tolist()
        # Under fp16 an inf gradient is routine (the scaler skips that update and lowers
        # the scale), so only the loss decides there.
        finite = math.isfinite(loss_value) and (
            self.scaler is not None or math.isfinite(norm_value)
        )
        if not finite:
            self.optimizer.zero_grad(set_to_none=True)
            step = self.step + 1
            if not cfg.skip_nonfinite:
                raise PretrainkitError(
                    f"non-finite loss ({loss_value}) or gradient norm ({norm_value}) at step "
                    f"{step}; stopped before updating the weights. Lower lr, check the data, or "
                    "set skip_nonfinite=True to skip such steps"
                )
            if self.scaler is not None:
                self.scaler.update()
            self.scheduler.step()  # the schedule stays tied to the step count
            self.skipped_steps += 1
            logger.warning("step %d skipped: non-finite loss (%s)", step, loss_value)
            return StepResult(None, norm_value, lr, tokens, time.perf_counter() - started)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - started
        return StepResult(loss_value, norm_value, lr, tokens, seconds, metrics)

    def _evaluate(self, log: RunLog) -> None:
        self.wrapped.eval()
        try:
            with torch.no_grad():
                results = self.evaluate(self.model) if self.evaluate is not None else {}
        finally:
            self.wrapped.train()
        try:
            self.last_eval = {str(k): float(v) for k, v in dict(results).items()}
        except (TypeError, ValueError):
            raise PretrainkitError(
                f"evaluate() must return a dict of numbers, got {results!r}"
            ) from None
        self._eval_step = self.step
        log.write({"step": self.step, **{f"dev/{k}": v for k, v in self.last_eval.items()}})

    def _save(self, started: float) -> None:
        self._saved_step = self.step
        if not self.is_main:
            return  # scale-out strategies will add a barrier / sharded save here
        state = {
            "format": 1,
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": ckpt.rng_state(),
            "counters": {
                "skipped_steps": self.skipped_steps,
                "tokens_seen": self.tokens_seen,
                "elapsed": self._elapsed_before + time.perf_counter() - started,
            },
            "precision": self.precision,
        }
        ckpt.save_checkpoint(
            self.run_dir,
            self.step,
            self.model,
            state,
            self.train_data.state_dict(),
            self.config.keep_last,
        )
