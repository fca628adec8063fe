"""Plot a run's metrics.jsonl into PNG files under ``run_dir/plots/``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pretrainkit.errors import PretrainkitError
from pretrainkit.fileio import atomic_file
from pretrainkit.training.runlog import METRICS_FILE, read_metrics

# (key in metrics.jsonl, file name, y-axis label); dev/* metrics are added per run.
_TRAIN_PLOTS = (
    ("loss", "loss", "training loss"),
    ("lr", "lr", "learning rate"),
    ("tokens_per_s", "tokens_per_s", "tokens / s"),
    ("grad_norm", "grad_norm", "gradient norm"),
)


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
    return [s for s, _ in points], [float(v) for _, v in points]


def _save_plot(path: Path, steps: list[int], values: list[float], label: str, run: str) -> None:
    # Figure + Agg canvas directly: no pyplot, so the caller's matplotlib backend is untouched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3)
    axes.set_xlabel("step")
    axes.set_ylabel(label)
    axes.set_title(f"{run}: {label}")
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, format="png")


def plot_run(run_dir: str | Path) -> list[Path]:
    """Write one PNG per metric (loss, lr, tokens/s, grad norm, each ``dev/*``).

    Args:
        run_dir: A run folder holding ``metrics.jsonl``.

    Returns:
        The PNG files written, in ``run_dir/plots/``.

    Raises:
        PretrainkitError: ``metrics.jsonl`` is missing or has no records.
    """
    run_dir = Path(run_dir)
    path = run_dir / METRICS_FILE
    if not path.is_file():
        raise PretrainkitError(f"{path}: not found; is {run_dir} a training run folder?")
    records = read_metrics(path)
    if not records:
        raise PretrainkitError(f"{path}: no metric records yet (the run logged nothing)")
    plots_dir = run_dir / "plots"
    plots_dir.mkdir(exist_ok=True)
    dev_keys = sorted({key for r in records for key in r if key.startswith("dev/")})
    wanted = [*_TRAIN_PLOTS, *((key, key, key) for key in dev_keys)]
    written = []
    for key, name, label in wanted:
        steps, values = _series(records, key)
        if not steps:
            continue
        target = plots_dir / (re.sub(r"[^A-Za-z0-9_.-]+", "_", name) + ".png")
        # The plots folder is this command's own output: a rerun replaces its PNGs.
        with atomic_file(target, overwrite=True) as tmp:
            _save_plot(tmp, steps, values, label, run_dir.name)
        written.append(target)
    return written
