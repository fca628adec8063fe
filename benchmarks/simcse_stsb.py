"""STS-B en dev Spearman of a pre-trained model before and after unsupervised SimCSE.

    python benchmarks/simcse_stsb.py --model DIR \
        --train ../shared/data/stsb-multi-mt/stsb-en-train.csv \
        --dev ../shared/data/stsb-multi-mt/stsb-en-dev.csv --steps 500 --out /tmp/simcse

``--model``: a pre-trained folder (e.g. from ``pretrainkit demo --out DIR``). Training uses the
distinct sentences of ``--train`` (a pair file: its scores are not used; or one sentence a
line). "before" is the untouched encoder with the task's pooling, scored the same way. Prints one
JSON object with both numbers, the settings, the date and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import pretrainkit
from pretrainkit.tasks import build_task
from pretrainkit.workflows.finetune import evaluate_task, finetune, task_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--train", required=True, type=Path)
    parser.add_argument("--dev", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path, help="a new run folder")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-5)
    parser.add_argument("--seq-length", type=int, default=32)
    parser.add_argument("--pooling", default="mean")
    parser.add_argument("--temperature", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=42, help="training seed (finetune's default)")
    args = parser.parse_args()
    options = {
        "seq_length": args.seq_length,
        "pooling": args.pooling,
        "temperature": args.temperature,
    }
    task = build_task("simcse", options)
    dev = task.read(args.dev)
    before = evaluate_task(task_model(pretrainkit.load(args.model), task), task, dev)
    start = time.perf_counter()
    train = {
        "steps": args.steps,
        "lr": args.lr,
        "progress": False,
        "log_every": 50,
        "seed": args.seed,
    }
    result = finetune(
        "simcse", args.model, args.train, args.dev, args.out, train,
        batch_size=args.batch_size, task_options=options,
    )  # fmt: skip
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average": os.getloadavg(),
        "model": str(args.model),
        "train": str(args.train),
        "dev": str(args.dev),
        **{k: v for k, v in vars(args).items() if k not in ("model", "train", "dev", "out")},
        "train_seconds": round(time.perf_counter() - start, 1),
        "spearman_before": before["spearman"],
        "spearman_after": result["last_eval"]["spearman"],
        "pearson_before": before["pearson"],
        "pearson_after": result["last_eval"]["pearson"],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
