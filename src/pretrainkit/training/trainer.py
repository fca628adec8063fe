"""The one training loop: pre-training, fine-tuning and distillation differ only in the model."""

from __future__ import annotations

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

from pretrainkit.distributed import (
    ParallelConfig,
    all_reduce_sum,
    broadcast_object,
    gather_objects,
    is_main_process,
    parallelize,
    rank,
    world_size,
)
from pretrainkit.errors import CheckpointError, ConfigError, PretrainkitError
from pretrainkit.training import checkpoint as ckpt
from pretrainkit.training.config import TrainConfig
from pretrainkit.training.contract import check_trainable
from pretrainkit.training.optim import build_scheduler
from pretrainkit.training.precision import resolve_precision
from pretrainkit.training.progress import ProgressBar
from pretrainkit.training.runlog import RunLog
from pretrainkit.training.stats import StepResult, Window, count_tokens

logger = logging.getLogger(__name__)


class BatchSource(Protocol):
    """What the trainer pulls batches from (see docs/INTERFACES.md).

    Optionally also ``load_reader_states(states)``: continue from the positions of every
    reader of a run with another number of data-parallel readers; it returns an object with
    ``describe(readers)`` (the log line) and ``exact`` (``BatchIterator``'s does).
    """

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
        resume: Continue from the latest checkpoint in ``out_dir`` whose files match its
            manifest. Newer damaged ones are renamed ``step-XXXXXXXX.damaged`` (kept, never
            deleted) with a warning saying what is wrong. When there is no checkpoint at all, a
            warning is logged and a fresh run starts (so a preempted job can always be
            relaunched with the same command).
        strategy: Distribution strategy (a name or a ``ParallelConfig``) handed to
            ``pretrainkit.distributed.parallelize``. Under several processes each one passes
            its own part of the data; losses and metrics are logged as means over processes.

    Raises:
        ConfigError: Bad precision for the device, unknown strategy, or (``resume=False``)
            ``out_dir`` already holds checkpoints of another run.
        CheckpointError: (from ``fit``) ``resume`` with checkpoints none of which is intact;
            the message lists each one and what is wrong with it.
    """

    def __init__(
        self,
        model: nn.Module,
        train_data: BatchSource,
        config: TrainConfig,
        out_dir: str | Path,
        evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
        resume: bool = False,
        strategy: str | ParallelConfig = "single",
    ):
        if not isinstance(config, TrainConfig):
            raise ConfigError(f"config must be a TrainConfig, got {type(config).__name__}")
        check_trainable(model)
        self.config = config
        self.run_dir = Path(out_dir)
        device = config.resolved_device()
        self.precision = resolve_precision(config.precision, device)
        micro_batch = int(getattr(train_data, "batch_size", 1))
        # The only backend-specific call; afterwards the loop talks to the engine.
        self.engine = parallelize(model, strategy, config, device, self.precision, micro_batch)
        if evaluate is not None and self.engine.pipeline_parallel > 1:
            raise ConfigError(
                "evaluate with pipeline parallelism is not supported yet: each process holds "
                "one stage of the model, which cannot score a batch alone"
            )
        self.device = self.engine.device
        self.model = self.engine.model
        self.optimizer = self.engine.optimizer
        self.scheduler = build_scheduler(self.optimizer, config)
        self.train_data = train_data
        self.evaluate = evaluate
        self.resume = resume
        self.is_main = is_main_process()
        self.rank, self.world_size = rank(), world_size()
        self.step = 0
        self.skipped_steps = 0
        self.tokens_seen = 0
        self.last_eval: dict[str, float] = {}
        self._elapsed_before = 0.0
        self._saved_step = -1
        self._eval_step = -1
        self._resumed_from: Path | None = None
        self._batch_checked = False

    # -- setup -------------------------------------------------------------------------

    def _start(self) -> int | None:
        """Resume or start fresh; returns the checkpoint step resumed from, or None."""
        found = ckpt.list_checkpoints(self.run_dir)
        if self.is_main:
            ckpt.remove_leftovers(self.run_dir / "checkpoints")
            ckpt.remove_leftovers(self.run_dir)
        if found and not self.resume:
            raise ConfigError(
                f"{self.run_dir} already holds checkpoints (latest {found[-1][1].name}); pass "
                "resume=True to continue that run, or choose another out_dir"
            )
        if not found:
            if self.resume:
                logger.warning(
                    "resume requested but %s has no checkpoint: starting fresh", self.run_dir
                )
            seed = self.config.seed
            torch.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed)
            return None
        self._load(self._intact_checkpoint())
        logger.info("resumed from %s (step %d)", self._resumed_from, self.step)
        return self.step

    def _intact_checkpoint(self) -> Path:
        """The newest checkpoint that matches its manifest; newer damaged ones are set aside.

        The main process checks (hashing every file once) and tells the others its choice.
        """
        trust = self.engine.trust_checkpoint
        found = ckpt.find_resumable(self.run_dir, trust) if self.is_main else None
        chosen, skipped = broadcast_object(found)
        if chosen is None:
            listed = "; ".join(f"{folder.name}: {why}" for folder, why in skipped)
            raise CheckpointError(
                f"{self.run_dir}: no intact checkpoint to resume from ({listed}). Nothing was "
                "changed; start a new run in another folder, or restore a checkpoint"
            )
        if self.is_main:
            for folder, why in skipped:
                aside = ckpt.set_aside(folder)
                logger.warning(
                    "checkpoint %s is damaged (%s); resuming from %s instead. The damaged one "
                    "is kept as %s",
                    folder,
                    why,
                    chosen.name,
                    aside.name,
                )
            if not (chosen / ckpt.MANIFEST).exists():  # accepted unverified: trust_checkpoint
                logger.warning(
                    "resuming from %s without verifying it (no %s; --trust-checkpoint)",
                    chosen,
                    ckpt.MANIFEST,
                )
        self._resumed_from = chosen
        return chosen

    def _load(self, directory: Path) -> None:
        state = ckpt.load_trainer_state(directory)
        if state.get("checkpoint_format") == "sharded":  # engines that cannot reshard it refuse
            from pretrainkit.distributed.sharded_checkpoint import check_resumable

            check_resumable(self.engine, directory)
        # Positions are per data-parallel reader (under TP, one per tensor-parallel group).
        positions = ckpt.load_data_states(directory)
        self.engine.load(directory, state)
        self.scheduler.load_state_dict(state["scheduler"])
        self._load_position(directory, positions)
        counters = state.get("counters", {})
        self.step = int(state["step"])
        self.skipped_steps = int(counters.get("skipped_steps", 0))
        self.tokens_seen = int(counters.get("tokens_seen", 0))
        self._elapsed_before = float(counters.get("elapsed", 0.0))
        self._saved_step = self._eval_step = self.step
        # Last: nothing after this may draw random numbers before the first resumed step.
        per_rank = state.get("rank_rng") or [state["rng"]]
        ckpt.set_rng_state(per_rank[self.rank] if len(per_rank) == self.world_size else per_rank[0])

    def _load_position(self, directory: Path, positions: list[dict[str, Any]]) -> None:
        """Continue the data where the saved readers left it, on this run's readers.

        As many readers: each takes its own position (bit for bit). Another number: the batch
        source re-splits the global order the readers shared (``load_reader_states``; exact
        when they had stopped in lockstep, else a logged count of items read twice).
        """
        readers, rank = self.engine.data_world, self.engine.data_rank
        if len(positions) == readers:
            self.train_data.load_state_dict(positions[rank])
            return
        resplit = getattr(self.train_data, "load_reader_states", None)
        if resplit is None:
            raise CheckpointError(
                f"{directory / ckpt.DATA_STATE}: written by {len(positions)} data-parallel "
                f"reader(s), resumed with {readers}, and this batch source "
                f"({type(self.train_data).__name__}) has no load_reader_states to re-split "
                f"its position; resume with {len(positions)} (the model in the checkpoint loads "
                "anywhere with pretrainkit.load)"
            )
        moved = resplit(positions)
        if self.is_main:
            log = logger.info if moved.exact else logger.warning
            log(moved.describe(readers))

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
        readers = self.engine.data_world
        # The model-parallel layout is named only when there is one, so a plain run's line
        # reads as before.
        layout = "".join(
            f", {name} parallel {size}"
            for name, size in (
                ("tensor", self.engine.tensor_parallel),
                ("pipeline", self.engine.pipeline_parallel),
            )
            if size > 1
        )
        if getattr(self.engine, "sequence_parallel", False):
            layout += " (sequence parallel)"
        logger.info(
            "%d process(es), strategy %s%s; effective batch per optimizer step: %d × accumulate "
            "%d × %d data-parallel process(es) = %d sequences",
            self.world_size,
            self.engine.strategy_name,
            layout,
            getattr(self.train_data, "batch_size", 0),
            cfg.accumulate,
            readers,
            getattr(self.train_data, "batch_size", 0) * cfg.accumulate * readers,
        )
        self.engine.module.train()
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
            weights = self.engine.full_state_dict()  # every process: may gather shards
            if self.is_main:
                # A resumed run replaces its own final model (written when it ended before).
                ckpt.save_model(self.model, model_dir, weights, overwrite=self.resume)
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
        """One optimizer step over ``accumulate`` micro-batches on every process."""
        cfg = self.config
        started = time.perf_counter()
        lr = float(self.scheduler.get_last_lr()[0])
        loss_sum = torch.zeros((), device=self.device)
        metrics: dict[str, Tensor] = {}
        tokens = 0
        for micro in range(cfg.accumulate):
            batch = self.train_data.next_batch()
            if not self._batch_checked:  # TP / PP: one group (pipeline), one batch
                self.engine.check_batch(batch)
                self._batch_checked = True
            tokens += count_tokens(batch)
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            # The engine runs forward and backward (a pipeline schedule owns both).
            loss, micro_metrics = self.engine.forward_backward(
                batch, cfg.accumulate, last=micro == cfg.accumulate - 1
            )
            loss_sum += loss
            for name, value in micro_metrics.items():
                metrics[name] = metrics[name] + value if name in metrics else value
        # Means over processes, in one collective: every process then takes the same decision
        # on a non-finite loss, and the log shows the whole global batch.
        names = sorted(metrics)
        local = torch.stack([loss_sum, *(metrics[n] for n in names)]).float()
        count = torch.tensor([float(tokens)], device=local.device)
        totals = all_reduce_sum(torch.cat([local, count]))
        values = totals[:-1] / self.world_size
        metrics = dict(zip(names, values[1:]))
        # Under TP (PP) every process of a tensor-parallel group (pipeline) saw the same tokens,
        # and holds the same loss.
        loss_value, tokens = float(values[0]), int(totals[-1]) // self.engine.model_parallel
        step = self.step + 1
        if not math.isfinite(loss_value):
            self._nonfinite(step, f"loss ({loss_value})")
            return StepResult(None, math.nan, lr, tokens, time.perf_counter() - started)
        norm_value, applied = self.engine.step(cfg.clip_grad)
        if not applied:
            self._nonfinite(step, f"gradient norm ({norm_value})", stepped=True)
            return StepResult(None, norm_value, lr, tokens, time.perf_counter() - started)
        self.scheduler.step()
        seconds = time.perf_counter() - started
        return StepResult(loss_value, norm_value, lr, tokens, seconds, metrics)

    def _nonfinite(self, step: int, what: str, stepped: bool = False) -> None:
        """Stop on a non-finite loss or gradient norm, or skip the step (``skip_nonfinite``).

        ``stepped``: the engine already dropped the update (non-finite gradient norm).
        """
        if not self.config.skip_nonfinite:
            if not stepped:
                self.engine.zero_grad()
            raise PretrainkitError(
                f"non-finite {what} at step {step}; stopped before updating the weights. Lower "
                "lr, check the data, or set skip_nonfinite=True to skip such steps"
            )
        if not stepped:
            self.engine.skip()
        self.scheduler.step()  # the schedule stays tied to the step count
        self.skipped_steps += 1
        logger.warning("step %d skipped: non-finite %s", step, what)

    def _evaluate(self, log: RunLog) -> None:
        self.engine.module.eval()
        try:
            with torch.no_grad():
                results = self.evaluate(self.model) if self.evaluate is not None else {}
        finally:
            self.engine.module.train()
        try:
            self.last_eval = {str(k): float(v) for k, v in dict(results).items()}
        except (TypeError, ValueError):
            raise PretrainkitError(
                f"evaluate() must return a dict of numbers, got {results!r}"
            ) from None
        self._eval_step = self.step
        log.write({"step": self.step, **{f"dev/{k}": v for k, v in self.last_eval.items()}})

    def _save(self, started: float) -> None:
        """Write a checkpoint; every process takes part (gathers, shards, data positions)."""
        self._saved_step = self.step
        # Sharded: every process writes its own part of both (engine.save_shards); nothing is
        # gathered onto rank 0.
        sharded = self.engine.checkpoint_format == "sharded"
        weights = None if sharded else self.engine.full_state_dict()
        optimizer = None if sharded else self.engine.optimizer_state()
        # One position per data-parallel reader: under TP (PP), that of each group's
        # (pipeline's) first process (global rank = dp × model_parallel + tp or stage).
        positions = gather_objects(self.train_data.state_dict())[:: self.engine.model_parallel]
        rngs = gather_objects(ckpt.rng_state())
        state = None
        if self.is_main:
            state = {
                "format": 2,  # 2: optimizer state keyed by parameter name, positions per rank
                "step": self.step,
                "optimizer": optimizer,
                "checkpoint_format": self.engine.checkpoint_format,
                "scheduler": self.scheduler.state_dict(),
                **self.engine.extra_state(),
                "rng": rngs[0],
                "rank_rng": rngs if len(rngs) > 1 else None,
                "counters": {
                    "skipped_steps": self.skipped_steps,
                    "tokens_seen": self.tokens_seen,
                    "elapsed": self._elapsed_before + time.perf_counter() - started,
                },
                "precision": self.precision,
                "world_size": self.world_size,
            }
        ckpt.save_checkpoint(
            self.run_dir,
            self.step,
            self.model,
            state,
            positions,
            self.config.keep_last,
            weights=weights,
            write_shards=self.engine.save_shards,
            weights_in_shards=sharded,
        )
