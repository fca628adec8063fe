"""A rich progress bar for the loop: step, loss, lr, tokens/s and time remaining."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class ProgressBar:
    """Shows training progress; a no-op when disabled (``progress=False`` or not rank 0).

    Outside a terminal (CI logs, redirected output) the bar is transient, so it does not
    leave one frozen line per refresh in the log.
    """

    def __init__(self, total: int, completed: int = 0, enabled: bool = True):
        self._progress: Progress | None = None
        if not enabled:
            return
        console = Console(stderr=True)
        self._progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            transient=not console.is_terminal,
        )
        self._task = self._progress.add_task("train", total=total, completed=completed, stats="")
        self._progress.start()

    def update(self, step: int, loss: float | None, lr: float, tokens_per_s: float) -> None:
        """Move the bar to ``step`` and show the latest numbers."""
        if self._progress is None:
            return
        loss_text = "nan" if loss is None else f"{loss:.4f}"
        stats = f"loss {loss_text}  lr {lr:.2e}  {tokens_per_s:,.0f} tok/s"
        self._progress.update(self._task, completed=step, stats=stats)

    def close(self) -> None:
        """Stop refreshing and release the terminal."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
