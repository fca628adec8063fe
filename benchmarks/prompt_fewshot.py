"""SST-2 few-shot: the prompt task (cloze over label words) against the plain classification head.

    OMP_NUM_THREADS=1 python benchmarks/prompt_fewshot.py --model runs/demo/pretrain/model

``--model`` is a pre-trained folder with an ``mlm`` head (``pretrainkit demo`` writes one to
``runs/demo/pretrain/model``). For every training size and seed, a class-balanced sample of SST-2
train rows (the seed picks the rows and seeds training) is fine-tuned with the same steps,
batch, learning rate and warmup by each method, and scored on the whole SST-2 dev set:

- ``classification``: the classification task's head (mean pooling, as the demo).
- ``prompt``: ``--task prompt`` as the workflow runs it: the cloze head scores the label words
  only (``PromptClassification.prepare``) and starts as the pre-trained MLM head
  (``PromptClassification.initial_head``).
- ``zero-shot``: the pre-trained MLM's choice between the label words at the mask, no training.

Prints a table of dev accuracy, mean ± sample standard deviation over the seeds, and the
settings; ``--json`` also writes every run's numbers.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

import pretrainkit
from pretrainkit.model import Model
from pretrainkit.paths import find_data_dir
from pretrainkit.tasks import build_task
from pretrainkit.workflows import finetune as finetune_module

COLUMNS = ("label", "text_a")
METHODS = ("classification", "prompt", "zero-shot")


def read_rows(path: Path) -> list[tuple[str, str]]:
    """SST-2's ``label<TAB>sentence`` rows (no header)."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            label, text = line.split("\t")
            rows.append((label, text))
    return rows


def balanced_sample(rows: list[tuple[str, str]], size: int, seed: int) -> list[tuple[str, str]]:
    """``size`` rows, half of each label (few-shot papers sample K per class)."""
    rng = random.Random(seed)
    picked: list[tuple[str, str]] = []
    labels = sorted({label for label, _ in rows})
    for i, label in enumerate(labels):
        pool = [row for row in rows if row[0] == label]
        picked += rng.sample(pool, size // len(labels) + (i < size % len(labels)))
    rng.shuffle(picked)
    return picked


def write_rows(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("".join(f"{label}\t{text}\n" for label, text in rows), encoding="utf-8")
    return path


def run_one(
    method: str,
    base: Model,
    train: Path,
    dev: Path,
    work: Path,
    args: argparse.Namespace,
    seed: int,
) -> float:
    prompt_options = {"template": args.template, "label_words": args.label_words}
    common = {"seq_length": args.seq_length}
    if method == "zero-shot":
        task = build_task("prompt", {**common, **prompt_options})
        model = finetune_module.task_model(base, task)
        data = task.read(dev, columns=COLUMNS)
        return finetune_module.evaluate_task(model, task, data)["accuracy"]
    if method == "classification":
        task = build_task("classification", {**common, "pooling": "mean"})
    else:
        task = build_task("prompt", {**common, **prompt_options})
    train_options = {
        "steps": args.steps,
        "lr": args.lr,
        "warmup": args.steps // 10,
        "seed": seed,
        "precision": "fp32",
        "progress": False,
        "log_every": args.steps,
    }
    result = finetune_module.finetune(
        task, base, train, dev, work / f"{method}-{seed}", train_options,
        batch_size=args.batch_size, columns=COLUMNS,
    )  # fmt: skip
    return result["last_eval"]["accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="pre-trained folder with an mlm head")
    parser.add_argument("--data", help="data mirror holding sst2/ (else the usual lookup)")
    parser.add_argument("--sizes", default="32,128", help="training rows, comma-separated")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-4, help="the task default at hidden 256")
    parser.add_argument("--seq-length", type=int, default=64)
    parser.add_argument("--template", default="{text_a} It was {mask} .")
    parser.add_argument("--label-words", default="0:terrible,1:great")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write every run's accuracy here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    started, load = time.perf_counter(), os.getloadavg()
    data = find_data_dir(args.data, required=("sst2/train.tsv", "sst2/dev.tsv")) / "sst2"
    rows = read_rows(data / "train.tsv")
    base = pretrainkit.load(args.model)
    methods = args.methods.split(",")
    sizes = [int(s) for s in args.sizes.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    results: dict[str, dict[int, list[float]]] = {m: {n: [] for n in sizes} for m in methods}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for size in sizes:
            for seed in seeds:
                train = write_rows(
                    work / f"train-{size}-{seed}.tsv", balanced_sample(rows, size, seed)
                )
                for method in methods:
                    if method == "zero-shot" and seed != seeds[0]:
                        results[method][size].append(results[method][size][0])  # no training
                        continue
                    accuracy = run_one(
                        method, base, train, data / "dev.tsv", work / f"{size}", args, seed
                    )
                    results[method][size].append(accuracy)
                    print(f"  {method:15s} rows {size:4d} seed {seed}: {accuracy:.4f}", flush=True)
    print(
        f"\nSST-2 dev accuracy (872 rows), {len(seeds)} seeds, mean ± std; {args.steps} steps, "
        f"batch {args.batch_size}, lr {args.lr}, warmup {args.steps // 10}, seq {args.seq_length}"
    )
    print(f"template {args.template!r}, label words {args.label_words!r}; model {args.model}")
    print("| method | " + " | ".join(f"{n} rows" for n in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    for method in methods:
        cells = []
        for size in sizes:
            values = results[method][size]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{100 * statistics.mean(values):.1f} ± {100 * std:.1f}")
        print(f"| {method} | " + " | ".join(cells) + " |")
    minutes = (time.perf_counter() - started) / 60
    print(
        f"\n{datetime.date.today()}, {minutes:.1f} min, {args.threads} thread(s), load average "
        f"at start {load[0]:.2f}, torch {torch.__version__}"
    )
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)},
                                         "results": results}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
