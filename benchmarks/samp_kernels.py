"""SAMP's fused CPU kernels against the PyTorch ops they replace, one shape at a time.

Usage: python benchmarks/samp_kernels.py [--hidden 384] [--ffn 1536] [--heads 12] [--tokens 128]
           [--threads 1] [--calls 200]

Rows: each INT8 linear of a post-norm block (fused QKV, output + residual + LayerNorm,
up + GELU, down + residual + LayerNorm) with the three ``Int8Linear`` kernels, the attention
softmax (bf16 scores, key mask, bf16 probabilities) and the bf16 ``q @ k^T`` on strided views of
the fused projection vs contiguous copies. Median of 5 runs of ``--calls`` calls, microseconds.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
import warnings

import torch

from pretrainkit.samp import fused
from pretrainkit.samp.linear import Int8Linear


def timed(fn, calls: int) -> float:
    for _ in range(10):
        fn()
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        runs.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--ffn", type=int, default=1536)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if not fused.available():
        raise SystemExit(f"the fused kernels are not available: {fused.reason()}")
    h, f, t = args.hidden, args.ffn, args.tokens
    norm = torch.nn.LayerNorm(h)
    x, inner = torch.randn(1, t, h), torch.randn(1, t, f)
    cases = {  # name: (in, out, input, call options)
        "QKV projection → bf16": (h, 3 * h, x, {"out_dtype": torch.bfloat16}),
        "output + residual + LayerNorm": (h, h, x.bfloat16(), {"residual": x, "norm": norm}),
        "up + GELU → bf16": (h, f, x, {"gelu": True, "out_dtype": torch.bfloat16}),
        "down + residual + LayerNorm": (f, h, inner.bfloat16(), {"residual": x, "norm": norm}),
    }
    print(f"{args.threads} thread(s), {t} tokens, hidden {h}, FFN {f}, {args.heads} heads\n")
    print("| operation | fused µs | int_mm (eager ops) µs | fbgemm µs |")
    print("|---|---:|---:|---:|")
    with torch.no_grad():
        for name, (n_in, n_out, inp, options) in cases.items():
            linear = torch.nn.Linear(n_in, n_out)
            row = []
            for kernel in ("fused", "int_mm", "fbgemm"):
                layer = Int8Linear.from_linear(linear, torch.float32, kernel)
                call = functools.partial(layer, inp, **options)
                row.append(timed(call, args.calls))
            print(f"| {name} | {row[0]:.1f} | {row[1]:.1f} | {row[2]:.1f} |")

        d = h // args.heads
        scores = (torch.randn(1, args.heads, t, t) * 3).bfloat16()
        keep = torch.ones(1, t, dtype=torch.bool)
        keep[0, -t // 8 :] = False
        mask = keep[:, None, None, :]

        def eager_softmax():
            masked = scores.masked_fill(~mask, float("-inf"))
            return torch.softmax(masked, -1, dtype=torch.float32).bfloat16()

        kernels = fused.kernels()
        eager = timed(eager_softmax, args.calls)
        fast = timed(lambda: kernels.softmax_bf16(scores, keep), args.calls)
        print(f"| softmax, key mask, bf16 in/out ({args.heads} × {t} × {t}) | {fast:.1f} | "
              f"{eager:.1f} (PyTorch) | |")  # fmt: skip

        qkv = torch.randn(1, t, 3 * h).bfloat16()
        q, k, _ = (p.view(1, t, args.heads, d).transpose(1, 2) for p in qkv.split(h, -1))
        strided = timed(lambda: torch.matmul(q, k.transpose(-1, -2)), args.calls)
        copied = timed(
            lambda: torch.matmul(q.contiguous(), k.contiguous().transpose(-1, -2)), args.calls
        )
        print(f"| bf16 q @ kᵀ: contiguous copies first vs strided views | {copied:.1f} | "
              f"{strided:.1f} (strided) | |")  # fmt: skip


if __name__ == "__main__":
    main()
