"""Where a pre-training step's time goes: torch.profiler over a few steps of a preset.

    python benchmarks/profile_step.py --preset bert-tiny --precision bf16 [--steps 5] \
        [--batch 32] [--seq 128] [--threads 1] [--rows 25] [--trace trace.json]

The step is the trainer's: forward under autocast, backward, fused AdamW, on a random MLM +
NSP batch (15 % masked). Prints the operators by self CPU time (forward and backward kernels
appear under their own names; ``autograd::engine::evaluate_function: XBackward`` rows are the
backward), grouped shares for attention, linear layers, dropout, normalisation, the MLM head
and the optimizer, and the wall time per step outside the profiler. ``--trace`` writes a
Chrome trace to look at in chrome://tracing or Perfetto.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile

import pretrainkit
from pretrainkit.training.config import TrainConfig
from pretrainkit.training.optim import build_optimizer
from pretrainkit.training.precision import autocast

GROUPS = {
    "attention": ("scaled_dot_product", "attention", "softmax", "baddbmm", "bmm"),
    "linear": ("addmm", "linear", "mm", "matmul"),
    "dropout": ("dropout", "bernoulli", "native_dropout"),
    "norm": ("layer_norm", "native_layer_norm"),
    "loss/head": ("cross_entropy", "log_softmax", "nll_loss", "index", "masked"),
    "optimizer": ("adam", "_fused", "foreach"),
    "activation": ("gelu",),
    "copy/cast": ("copy_", "to", "_to_copy", "clone", "contiguous"),
}


def random_batch(vocab: int, batch: int, seq: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, vocab, (batch, seq), generator=g)
    masked = torch.rand(batch, seq, generator=g) < 0.15
    return {
        "input_ids": ids.masked_fill(masked, 103),
        "attention_mask": torch.ones_like(ids),
        "token_type_ids": (torch.arange(seq) >= seq // 2).long().expand(batch, seq).clone(),
        "labels": torch.where(masked, ids, torch.full_like(ids, -100)),
        "pair_labels": torch.randint(0, 2, (batch,), generator=g),
    }


def train_step(model, optimizer, batch: dict[str, torch.Tensor], precision: str) -> None:
    """One step as the trainer runs it: forward under autocast, backward, clipping, AdamW."""
    with autocast(precision, torch.device("cpu")):
        loss = model(**batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def interleaved_ms(
    variants: dict[str, Callable[[int], None]], rounds: int, steps: int
) -> tuple[dict[str, list[float]], list[float]]:
    """Milliseconds per step of each variant, round by round: in every round each variant runs
    ``steps`` steps in turn (called with the step's index over all rounds), so machine noise
    falls on all of them. Also the 1-minute load average after each round."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    loads = []
    for r in range(rounds):
        for name, step in variants.items():
            start = time.perf_counter()
            for s in range(steps):
                step(r * steps + s)
            times[name].append((time.perf_counter() - start) / steps * 1000)
        loads.append(round(os.getloadavg()[0], 2))
    return times, loads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="bert-tiny")
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--trace", help="write a Chrome trace here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = pretrainkit.build_model(args.preset).train()
    optimizer = build_optimizer(model, TrainConfig(steps=1, lr=1e-4))
    batch = random_batch(model.config.vocab_size, args.batch, args.seq)

    def step() -> None:
        train_step(model, optimizer, batch, args.precision)

    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    wall = (time.perf_counter() - start) / args.steps
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    averages = prof.key_averages()
    print(averages.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    total = sum(e.self_cpu_time_total for e in averages)
    shares: dict[str, float] = {}
    for event in averages:
        name = event.key.lower()
        group = next((g for g, keys in GROUPS.items() if any(k in name for k in keys)), "other")
        shares[group] = shares.get(group, 0.0) + event.self_cpu_time_total
    print(
        json.dumps(
            {
                "preset": args.preset,
                "precision": args.precision,
                "batch": [args.batch, args.seq],
                "threads": args.threads,
                "ms_per_step": round(wall * 1000, 1),
                "self_cpu_share": {g: round(t / total, 3) for g, t in sorted(shares.items())},
                "load_average": round(os.getloadavg()[0], 2),
            },
            indent=2,
        )
    )
    if args.trace:
        prof.export_chrome_trace(args.trace)


if __name__ == "__main__":
    main()
