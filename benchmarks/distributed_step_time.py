"""Optimizer-step time of one process against two (torchrun, gloo) on this machine.

Every run pre-trains the same model (MLM) on the same shards with the same global batch, through
the `pretrainkit pretrain` command. One process gets all the machine's cores as threads; the two
processes split them (OMP_NUM_THREADS = cores / 2 each), so both use the whole CPU. The step
time is the median gap between consecutive `elapsed` values of metrics.jsonl (one record a
step), after the warm-up steps. With ``--rounds R`` the set of runs is repeated R times,
interleaved (so that load from other users hits every run alike), and the median is reported.

    python benchmarks/distributed_step_time.py \\
        --corpus ../shared/data/corpora/CLUECorpusSmall_bert_sampled.txt \\
        --tokenizer ../shared/data/vocab/google_zh_vocab.txt --preset bert-small
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

RUNS = {
    "single (1 process)": (1, ["--strategy", "single"]),
    "ddp (2 processes)": (2, ["--strategy", "ddp"]),
    "fsdp (2 processes)": (2, ["--strategy", "fsdp"]),
    "deepspeed ZeRO-2 (2 processes)": (2, ["--strategy", "deepspeed", "--zero-stage", "2"]),
}


def run(processes: int, argv: list[str], threads: int, log: Path) -> bool:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "TOKENIZERS_PARALLELISM": "false",
        "DS_ACCELERATOR": "cpu",
    }
    if processes == 1:
        command = [sys.executable, "-m", "pretrainkit", *argv]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        command += ["--nproc-per-node", str(processes), "-m", "pretrainkit", *argv]
    with log.open("wb") as sink:
        done = subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    if done.returncode:
        tail = log.read_text(errors="replace")[-2000:]
        print(f"FAILED (exit {done.returncode}): {' '.join(command)}\n{tail}", flush=True)
    return done.returncode == 0


def step_seconds(run_dir: Path, warmup: int) -> float:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    elapsed = [json.loads(line)["elapsed"] for line in lines]
    gaps = [b - a for a, b in zip(elapsed, elapsed[1:])][warmup:]
    return statistics.median(gaps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--preset", default="bert-small")
    parser.add_argument("--seq-length", type=int, default=128)
    parser.add_argument("--global-batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--only", nargs="*", help="names of RUNS to time (default: all)")
    args = parser.parse_args()
    cores = os.cpu_count() or 2
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shards = root / "shards"
        subprocess.run(
            [sys.executable, "-m", "pretrainkit", "preprocess", "--corpus", args.corpus,
             "--tokenizer", args.tokenizer, "--objective", "mlm", "--seq-length",
             str(args.seq_length), "--out", str(shards)],
            check=True, capture_output=True,
        )  # fmt: skip
        times: dict[str, list[float]] = {name: [] for name in RUNS}
        failures: dict[str, int] = {name: 0 for name in RUNS}
        for round_ in range(args.rounds):
            for name, (processes, extra) in RUNS.items():
                if args.only and name not in args.only:
                    continue
                out = root / f"{name.split()[0]}-{round_}"
                argv = [
                    "pretrain", "--model", args.preset, "--model.targets", "[{name: mlm}]",
                    "--data", str(shards), "--out", str(out), "--steps", str(args.steps),
                    "--global-batch-size", str(args.global_batch_size), "--log-every", "1",
                    "--precision", args.precision, "--no-progress", *extra,
                ]  # fmt: skip
                threads = max(1, cores // processes)
                if not run(processes, argv, threads, root / f"{out.name}.log"):
                    failures[name] += 1
                    continue
                times[name].append(step_seconds(out, args.warmup))
                print(f"round {round_ + 1} {name}: {times[name][-1]:.3f} s/step", flush=True)
    tokens = args.global_batch_size * args.seq_length
    rows = [
        (name, statistics.median(values), min(values), max(values), failures[name])
        for name, values in times.items()
        if values
    ]
    print(f"\n{platform.processor() or platform.machine()}, {cores} cores")
    print("| run | s / step (median) | min – max | tokens/s | vs 1 process | failed runs |")
    print("|---|---:|---:|---:|---:|---:|")
    base = rows[0][1] if rows and rows[0][0].startswith("single") else None
    for name, seconds, low, high, failed in rows:
        ratio = f"{base / seconds:.2f}×" if base else "—"
        print(
            f"| {name} | {seconds:.3f} | {low:.3f} – {high:.3f} | {tokens / seconds:,.0f} | "
            f"{ratio} | {failed} |"
        )


if __name__ == "__main__":
    main()
