"""The RESULTS.md tables of benchmarks/mpts_folds.sh: bi-encoder vs cross-encoder, 5-fold.

    python benchmarks/mpts_table.py WORK_DIR [--data MPTS_DEV_TSV]

Reads ``WORK_DIR/{siamese,cross_encoder}/folds.json`` (and ``WORK_DIR/baseline.json``, the
output of benchmarks/mpts_baseline.py, when it is there) and prints the summary metrics (mean ±
sample std over the folds) and one row per perspective: F1, accuracy and AUC (means over the
folds where defined), with the number of similar pairs under that perspective in the file.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import numpy as np

SYSTEMS = ("siamese", "cross_encoder")


def mean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else math.nan


def cell(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/mpts/dev.tsv"))
    args = parser.parse_args()
    reports = {s: json.loads((args.work / s / "folds.json").read_text()) for s in SYSTEMS}
    if (args.work / "baseline.json").is_file():
        reports["tfidf_lr"] = json.loads((args.work / "baseline.json").read_text())
    systems = list(reports)
    print("| metric | " + " | ".join(systems) + " |")
    print("|---|" + "---:|" * len(systems))
    for metric in ("weighted_f1", "macro_f1", "accuracy", "macro_auc"):
        row = [
            f"{reports[s][metric]['mean']:.3f} ± {reports[s][metric]['std']:.3f}" for s in systems
        ]
        print(f"| {metric} | " + " | ".join(row) + " |")
    with args.data.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    names = rows[0][3:]
    positives = {n: sum(r[3 + i].strip() == "1" for r in rows[1:]) for i, n in enumerate(names)}
    print()
    header = " | ".join(f"{s} F1 | {s} AUC" for s in systems)
    print(f"| perspective | similar pairs | {header} |")
    print("|---|---:|" + "---:|" * 2 * len(systems))
    for name in names:
        cells = []
        for s in systems:
            folds = reports[s]["folds"]
            for key in ("f1", "auc"):
                cells.append(cell(mean([f.get(f"{key}_{name}", math.nan) for f in folds])))
        print(f"| {name} | {positives[name]} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
