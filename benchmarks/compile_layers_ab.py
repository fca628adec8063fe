"""Eager against each transformer layer compiled with torch.compile (``nn.Module.compile``,
Inductor) for one pre-training step of a preset, interleaved round by round in one process.

    python benchmarks/compile_layers_ab.py --preset bert-small --precision fp32 [--rounds 4]

The step is profile_step.py's (random MLM + NSP batch 32 x 128, forward under autocast,
backward, clipping, fused AdamW), the two models built from the same seed; the compiled one's
layers compiled in place (parameter names unchanged). Measured in BENCHMARKS.md (issue 12):
it did not pay on this CPU, so the training loop has no such option.
Prints the compile + first step time, each round's milliseconds per step, and the medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from profile_step import interleaved_ms, random_batch, train_step

import pretrainkit
from pretrainkit.distributed.engines import transformer_layers
from pretrainkit.training.config import TrainConfig
from pretrainkit.training.optim import build_optimizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="bert-small")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2, help="steps per round and model")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    def make(compiled: bool):
        torch.manual_seed(0)
        model = pretrainkit.build_model(args.preset).train()
        if compiled:
            for layer in transformer_layers(model):
                layer.compile()
        return model, build_optimizer(model, TrainConfig(steps=1, lr=1e-4))

    models = {name: make(name == "compiled") for name in ("eager", "compiled")}
    batch = random_batch(models["eager"][0].config.vocab_size, 32, 128)

    def step(model, optimizer) -> None:
        train_step(model, optimizer, batch, args.precision)

    start = time.perf_counter()
    step(*models["compiled"])
    first = time.perf_counter() - start
    step(*models["eager"])
    times, loads = interleaved_ms(
        {name: lambda _, pair=pair: step(*pair) for name, pair in models.items()},
        args.rounds,
        args.steps,
    )
    eager, compiled = statistics.median(times["eager"]), statistics.median(times["compiled"])
    print(
        json.dumps(
            {
                "preset": args.preset,
                "precision": args.precision,
                "threads": args.threads,
                "compile_and_first_step_s": round(first, 1),
                "ms_per_step": {k: [round(v) for v in vs] for k, vs in times.items()},
                "median_ms": {"eager": round(eager), "compiled": round(compiled)},
                "speedup": round(eager / compiled, 3),
                "load_average": loads,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
