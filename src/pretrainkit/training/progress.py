"""Training progress: a rich bar in a terminal, log lines elsewhere (step, loss, tokens/s, ETA)."""

from __future__ import annotations

import logging
import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

logger = logging.getLogger("pretrainkit.progress")

# Outside a terminal: a line at least every this many seconds, and every tenth of the run.
LOG_SECONDS = 30.0


def _duration(seconds: float) -> str:
    seconds = int(max(0.0, seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


class ProgressBar:
    """Shows training progress; a no-op when disabled (``progress=False`` or not rank 0).

    In a terminal it is a live bar. Outside one (CI logs, ``nohup``, output redirected to a
    file) a bar shows nothing useful, so it logs one line every ``LOG_SECONDS`` seconds and
    every tenth of the steps instead: a run that takes an hour still says where it is.
    """

    def __init__(
        self,
        total: int,
        completed: int = 0,
        enabled: bool = True,
        terminal: bool | None = None,
        clock=time.monotonic,
    ):
        self._progress: Progress | None = None
        self._log_lines = False
        if not enabled:
            return
        console = Console(stderr=True)
        if not (console.is_terminal if terminal is None else terminal):
            self._log_lines = True
            self._total = total
            self._clock = clock
            self._start_step = completed
            self._started = self._last = clock()
            self._every = max(1, total // 10)
            return
        self._progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
        )
        self._task = self._progress.add_task("train", total=total, completed=completed, stats="")
        self._progress.start()

    def update(self, step: int, loss: float | None, lr: float, tokens_per_s: float) -> None:
        """Move the bar to ``step`` and show the latest numbers."""
        loss_text = "nan" if loss is None else f"{loss:.4f}"
        stats = f"loss {loss_text}  lr {lr:.2e}  {tokens_per_s:,.0f} tok/s"
        if self._log_lines:
            self._log(step, stats)
        elif self._progress is not None:
            self._progress.update(self._task, completed=step, stats=stats)

    def _log(self, step: int, stats: str) -> None:
        now = self._clock()
        due = now - self._last >= LOG_SECONDS or step % self._every == 0 or step == self._total
        if not due:
            return
        self._last = now
        done = step - self._start_step
        eta = (now - self._started) / done * (self._total - step) if done > 0 else 0.0
        logger.info(
            "step %d/%d  %s  elapsed %s  eta %s",
            step,
            self._total,
            stats,
            _duration(now - self._started),
            _duration(eta),
        )

    def close(self) -> None:
        """Stop refreshing and release the terminal."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
