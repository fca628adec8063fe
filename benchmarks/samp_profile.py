"""Where a quantized model's time goes: torch profiler table of one SAMP plan at batch 1 x SEQ.

Usage: python benchmarks/samp_profile.py (--model DIR | --preset P) [--plan QQQQQQ] [--float-dtype bf16]
           [--kernel fused] [--threads 1] [--seq 128] [--calls 10]
       perf record -D 6000 -o samp.perf python benchmarks/samp_profile.py --model DIR \
           --loop --calls 3000 && perf report -i samp.perf --sort dso

Plan letters: Q full INT8, f FFN-only INT8, F float. A model without a task head gets a
two-label classification head (its latency is the same).
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

from pretrainkit.samp.backends import build
from pretrainkit.samp.plan import Plan
from pretrainkit.samp.search import latency_inputs, latency_model

MODES = {"Q": "full", "f": "ffn", "F": "float"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model folder (a head is added if none)")
    parser.add_argument("--preset", help="or a preset with random weights, e.g. bert-base")
    parser.add_argument("--plan", help="one letter per layer (default: Q for every layer)")
    parser.add_argument("--float-dtype", default="bf16", choices=("bf16", "fp32"))
    parser.add_argument("--kernel", default="fused", choices=("fused", "fbgemm", "int_mm"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument(
        "--loop",
        action="store_true",
        help="no torch profiler: time --calls forwards after a 5 s pause (for `perf record -D "
        "6000`, which also sees the fused kernels' C++ time the torch profiler does not)",
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    if bool(args.model) == bool(args.preset):
        parser.error("give one of --model or --preset")
    model = latency_model(args.model, args.preset)
    letters = args.plan or "Q" * len(model.encoder.layers)
    plan = Plan([MODES[c] for c in letters], float_dtype=args.float_dtype, kernel=args.kernel)
    quantized = build(model, plan)
    inputs = latency_inputs(model, 1, args.seq)
    with torch.no_grad():
        for _ in range(3):  # warm-up: packed weights, fused projections
            quantized(**inputs)
        if args.loop:
            time.sleep(max(0.0, 5.0 - (time.perf_counter() - started)))
            start = time.perf_counter()
            for _ in range(args.calls):
                quantized(**inputs)
            ms = (time.perf_counter() - start) / args.calls * 1000
            print(f"plan {letters}, {args.threads} thread(s), 1 x {args.seq}: {ms:.2f} ms/forward")
            return
        with torch.profiler.profile() as profile:
            for _ in range(args.calls):
                quantized(**inputs)
    print(f"plan {letters}, {args.threads} thread(s), 1 x {args.seq}, {args.calls} calls")
    print(profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
