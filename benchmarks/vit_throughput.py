"""ViT image-classification training throughput: pretrainkit vs transformers'
``ViTForImageClassification`` at the same config (random init), same batch, one process,
interleaved round by round so machine noise hits both; AdamW step included; fp32 and bf16
autocast.

    python3 benchmarks/vit_throughput.py --precisions fp32 bf16 --threads 1

Default shape: ViT-Small-like width (6 layers, hidden 384, 6 heads, FFN 1536) on 64x64 RGB
images in 8x8 patches (64 patches + [CLS]), 10 classes, batch 16; dropout 0 in both (ViT's
default). Prints one JSON object: images/s per side (median over rounds) and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

import pretrainkit


def models(args: argparse.Namespace) -> tuple[torch.nn.Module, torch.nn.Module]:
    import transformers as tf

    labels = [str(i) for i in range(args.classes)]
    torch.manual_seed(0)
    ours = pretrainkit.build_model(
        "vit-base",
        {
            "hidden_size": args.hidden,
            "embedding.image_size": args.image_size,
            "embedding.patch_size": args.patch_size,
            "embedding.max_positions": (args.image_size // args.patch_size) ** 2 + 1,
            "encoder.num_layers": args.layers,
            "encoder.num_heads": args.heads,
            "encoder.ffn_size": args.ffn,
            "targets": [
                {"name": "classification", "labels": labels, "pooling": "first", "dropout": 0.0}
            ],
        },
    )
    config = tf.ViTConfig(
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        intermediate_size=args.ffn,
        image_size=args.image_size,
        patch_size=args.patch_size,
        num_channels=3,
        num_labels=args.classes,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    theirs = tf.ViTForImageClassification(config)
    return ours.train(), theirs.train()


def step_time(model, optimizer, batch, precision: str, steps: int) -> float:
    """Seconds for ``steps`` training steps (forward, backward, AdamW)."""
    start = time.perf_counter()
    for _ in range(steps):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5, help="training steps per round and side")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--patch-size", type=int, default=8)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--ffn", type=int, default=1536)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="print each side's top ops")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import transformers

    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(args.batch, 3, args.image_size, args.image_size, generator=generator)
    batch = {"pixel_values": pixels, "labels": torch.randint(0, args.classes, (args.batch,))}
    ours, theirs = models(args)
    optimizers = {
        "pretrainkit": (ours, torch.optim.AdamW(ours.parameters(), lr=1e-4)),
        "transformers": (theirs, torch.optim.AdamW(theirs.parameters(), lr=1e-4)),
    }
    parameters = {
        name: sum(p.numel() for p in m.parameters()) for name, (m, _) in optimizers.items()
    }
    results: dict[str, dict] = {}
    for precision in args.precisions:
        for model, optimizer in optimizers.values():  # warm-up, not timed
            step_time(model, optimizer, batch, precision, 2)
        rates: dict[str, list[float]] = {name: [] for name in optimizers}
        for _ in range(args.rounds):
            for name, (model, optimizer) in optimizers.items():
                seconds = step_time(model, optimizer, batch, precision, args.steps)
                rates[name].append(args.batch * args.steps / seconds)
        if args.profile:  # where each side spends a training step, to stderr
            from torch.profiler import ProfilerActivity, profile

            for name, (model, optimizer) in optimizers.items():
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    step_time(model, optimizer, batch, precision, 2)
                table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)
                print(f"--- {name} {precision}\n{table}", file=sys.stderr)
        medians = {name: statistics.median(values) for name, values in rates.items()}
        results[precision] = {
            "images_per_s": medians,
            "per_round": rates,
            "ratio": medians["pretrainkit"] / medians["transformers"],
        }
    print(
        json.dumps(
            {
                "config": vars(args),
                "parameters": parameters,
                "results": results,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "machine": platform.processor() or platform.machine(),
                "load_average": os.getloadavg(),
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
