"""`predict` throughput of fine-tuned model folders: float vs its SAMP plan, any task.

    python benchmarks/predict_throughput.py --models FLOAT_DIR QUANT_DIR --data FILE \
        [--rows 500] [--rounds 3] [--batch-size 64] [--threads 1]

Times the whole of ``pretrainkit predict`` but the process start and the file writing: read the
task file, tokenize (QA: windows), run the model, decode (argmax, Viterbi, span search over the
windows) and format the lines, in one process, the folders interleaved round by round so that
machine load hits them alike (after one warm-up call each). Reports rows/s per folder (median
over rounds and the spread), the ratio to the first folder, the load average, and whether the
folders' prediction lines agree. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from pretrainkit import load
from pretrainkit.tasks import task_of
from pretrainkit.workflows.finetune import model_outputs


def first_rows(path: Path, rows: int, workdir: Path) -> Path:
    """The first ``rows`` examples of a TSV (header kept) or SQuAD/C3 JSON file."""
    if rows <= 0:
        return path
    out = workdir / f"first-{rows}{path.suffix}"
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "data" in data:  # SQuAD / CMRC2018: whole articles
            kept, count = [], 0
            for article in data["data"]:
                if count >= rows:
                    break
                kept.append(article)
                count += sum(len(p["qas"]) for p in article["paragraphs"])
            data = {**data, "data": kept}
        else:
            data = data[:rows]
        out.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    else:
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        out.write_text("".join(lines[: rows + 1]), encoding="utf-8")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="a file of the models' task")
    parser.add_argument("--rows", type=int, default=500, help="first N rows/questions; 0 = all")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        data_file = first_rows(args.data, args.rows, Path(tmp))
        systems = []
        for folder in args.models:
            net = load(folder)
            task = task_of(net, str(folder))
            data = task.read(data_file, require_labels=False)
            systems.append((folder, net, task, data))

        def predict(net, task, data) -> list[str]:
            return task.prediction_lines(model_outputs(net, task, data, args.batch_size), data)

        lines = {}
        for folder, net, task, data in systems:  # warm-up; also the lines to compare
            lines[folder] = predict(net, task, data)
        count = len(next(iter(lines.values())))
        seconds: dict[Path, list[float]] = {folder: [] for folder, *_ in systems}
        loads = []
        for _ in range(args.rounds):
            for folder, net, task, data in systems:
                start = time.perf_counter()
                predict(net, task, data)
                seconds[folder].append(time.perf_counter() - start)
            loads.append(os.getloadavg()[0])
    base = statistics.median(seconds[args.models[0]])
    first = lines[args.models[0]]
    rows = []
    for folder in args.models:
        median = statistics.median(seconds[folder])
        same = sum(a == b for a, b in zip(first, lines[folder], strict=True))
        rows.append(
            {
                "model": str(folder),
                "rows_per_s": round(count / median, 2),
                "rows_per_s_range": [
                    round(count / max(seconds[folder]), 2),
                    round(count / min(seconds[folder]), 2),
                ],
                "speed_vs_first": round(base / median, 3),
                "lines_equal_to_first": f"{same}/{count}",
            }
        )
    print(
        json.dumps(
            {
                "data": str(args.data),
                "rows": count,
                "batch_size": args.batch_size,
                "threads": args.threads,
                "rounds": args.rounds,
                "load_average": [round(x, 2) for x in loads],
                "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                "torch": torch.__version__,
                "results": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
