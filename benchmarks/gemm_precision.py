"""fp32 against bf16 GEMM speed on this CPU, and whether it has native bf16 instructions.

    python benchmarks/gemm_precision.py [--threads 1] [--rounds 5]

One ``torch.nn.functional.linear`` of a BERT-small FFN shape (4,096 tokens x 512 -> 2,048),
fp32 and bf16 interleaved round by round in one process; prints GFLOP/s per precision (median
of rounds), the ratio, the CPU's model name, the bf16 flags ``--precision auto`` looks for
(``training.precision.CPU_BF16_FLAGS``) and the load average. On a CPU without them, bf16 is
emulated: this is the measurement behind the warning an explicit ``--precision bf16`` gives there.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from pretrainkit.training.precision import CPU_BF16_FLAGS, cpu_flags


def model_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "unknown"
    return next((line.split(":", 1)[1].strip() for line in lines if "model name" in line), "?")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--out-features", type=int, default=2048)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.tokens, args.hidden)
    w = torch.randn(args.out_features, args.hidden)
    pairs = {"fp32": (x, w), "bf16": (x.bfloat16(), w.bfloat16())}
    flop = 2 * args.tokens * args.hidden * args.out_features
    for a, b in pairs.values():  # warm-up
        torch.nn.functional.linear(a, b)
    rates: dict[str, list[float]] = {name: [] for name in pairs}
    loads = []
    for _ in range(args.rounds):
        for name, (a, b) in pairs.items():
            start = time.perf_counter()
            torch.nn.functional.linear(a, b)
            rates[name].append(flop / (time.perf_counter() - start) / 1e9)
        loads.append(round(os.getloadavg()[0], 2))
    median = {name: statistics.median(values) for name, values in rates.items()}
    print(
        json.dumps(
            {
                "cpu": model_name(),
                "native_bf16_flags": sorted(cpu_flags() & CPU_BF16_FLAGS),
                "threads": args.threads,
                "shape": [args.tokens, args.hidden, args.out_features],
                "gflops_median": {k: round(v, 1) for k, v in median.items()},
                "bf16_over_fp32": round(median["bf16"] / median["fp32"], 3),
                "load_average": loads,
                "torch": torch.__version__,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
