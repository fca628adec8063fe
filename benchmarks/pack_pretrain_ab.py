"""Padded against packed pre-training batches (``pretrain --pack``) of real shards, one step
of a preset, the two interleaved round by round in one process.

    python benchmarks/pack_pretrain_ab.py --shards SHARDS --preset bert-small --precision fp32

SHARDS: a ``pretrainkit preprocess --objective bert|albert|mlm`` folder (e.g. the CLUECorpusSmall
sample at seq 128, as benchmarks/vs_tencentpretrain.py builds it). The same --batches batches of
instances (the shards' seeded stream) are collated both ways: padded to their longest
(``Objective.collate``) and packed first-fit decreasing into rows as wide as the longest
(``Objective.collate_packed``). Two models are built from the same seed; each step is
profile_step.py's (forward under autocast, backward, clipping, fused AdamW). Also printed: the
losses of both on the first batch (from the same weights, dropout off), the rows and the share
of padding of both layouts.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable

import torch
from profile_step import interleaved_ms, train_step

import pretrainkit
from pretrainkit.data import Shards, pretraining_stream
from pretrainkit.data.objectives import get_objective
from pretrainkit.training.config import TrainConfig
from pretrainkit.training.optim import build_optimizer
from pretrainkit.training.precision import autocast


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", required=True)
    parser.add_argument("--preset", default="bert-small")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=4, help="distinct batches, cycled")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2, help="steps per round and layout")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the shards' instance stream (pretrain's default --seed is 42)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    shards = Shards.open(args.shards)
    objective = get_objective(shards.manifest["objective"])
    stream = pretraining_stream(shards, seed=args.seed)
    pad = shards.tokenizer.pad_id
    drawn = [[next(stream) for _ in range(args.batch_size)] for _ in range(args.batches)]
    layouts = {
        "padded": [objective.collate(b, pad) for b in drawn],
        "packed": [objective.collate_packed(b, pad) for b in drawn],
    }
    real = sum(int(b["attention_mask"].sum()) for b in layouts["padded"])
    shape = {
        name: {
            "rows": [int(b["input_ids"].shape[0]) for b in batches],
            "width": [int(b["input_ids"].shape[1]) for b in batches],
            "padding_share": round(1 - real / sum(b["input_ids"].numel() for b in batches), 3),
        }
        for name, batches in layouts.items()
    }
    vocab = shards.tokenizer.vocab_size

    def make():
        torch.manual_seed(0)
        model = pretrainkit.build_model(args.preset, {"vocab_size": vocab}).train()
        return model, build_optimizer(model, TrainConfig(steps=1, lr=1e-4))

    models = {name: make() for name in layouts}
    first_loss = {}
    for name, (model, _) in models.items():  # same weights, dropout off: the same loss
        model.eval()
        with torch.no_grad(), autocast(args.precision, torch.device("cpu")):
            first_loss[name] = float(model(**layouts[name][0]).loss)
        model.train()
    for name, (model, optimizer) in models.items():  # warm-up step each
        train_step(model, optimizer, layouts[name][0], args.precision)

    def variant(name: str) -> Callable[[int], None]:
        model, optimizer = models[name]
        return lambda i: train_step(
            model, optimizer, layouts[name][i % args.batches], args.precision
        )

    times, loads = interleaved_ms({name: variant(name) for name in models}, args.rounds, args.steps)
    padded, packed = statistics.median(times["padded"]), statistics.median(times["packed"])
    print(
        json.dumps(
            {
                "preset": args.preset,
                "precision": args.precision,
                "objective": objective.name,
                "batch_size": args.batch_size,
                "seed": args.seed,
                "threads": args.threads,
                "layouts": shape,
                "first_batch_loss": first_loss,
                "ms_per_step": {k: [round(v) for v in vs] for k, vs in times.items()},
                "median_ms": {"padded": round(padded), "packed": round(packed)},
                "speedup": round(padded / packed, 3),
                "load_average": loads,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
