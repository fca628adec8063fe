"""The tables of a continual-learning comparison: one accuracy matrix per run and a summary row
per run, from each run's continual.json (`pretrainkit continual`).

    python benchmarks/continual_table.py W/seq-full W/full-ewc W/random-5 W/method-5
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def load(run: Path) -> dict:
    try:
        return json.loads((run / "continual.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise SystemExit(f"continual_table: cannot read {run}/continual.json: {error}") from None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    records = {run.name: load(run) for run in args.runs}
    for name, record in records.items():
        summary = record["summary"]
        tasks = list(summary["matrix"])
        metrics = ", ".join(f"{t} ({summary['metric'][t]})" for t in tasks)
        print(f"\n{name}: {metrics}, after each step\n")
        print("| task | " + " | ".join(f"after {t}" for t in tasks) + " |")
        print("|---" * (len(tasks) + 1) + "|")
        for task in tasks:
            cells = ["" if v is None else f"{v:.4f}" for v in summary["matrix"][task]]
            print(f"| {task} | " + " | ".join(cells) + " |")
    first = next(iter(records.values()))
    tasks = list(first["summary"]["matrix"])
    print(
        "\n| run | "
        + " | ".join(f"{t} new" for t in tasks)
        + " | average final | average forgetting | trained share (max) | delta / full (max) "
        "| train s | select + Fisher s |"
    )
    print("|---" * (len(tasks) + 7) + "|")
    for name, record in records.items():
        summary = record["summary"]
        steps = record["steps"]
        overhead = sum(s["seconds"].get("select", 0) + s["seconds"].get("fisher", 0) for s in steps)
        cells = [f"{summary['new_task'][t]:.4f}" for t in tasks]
        print(
            f"| {name} | "
            + " | ".join(cells)
            + f" | {summary['average_final']:.4f} | {summary['average_forgetting']:.4f} "
            f"| {summary['max_trainable_share']:.2%} | {summary['max_delta_share']:.2%} "
            f"| {summary['train_seconds']:.0f} | {overhead:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
