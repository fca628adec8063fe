"""Tokens/s of greedy generation with and without the KV cache (CPU, random shrunk GPT-2).

Usage: python benchmarks/generation_speed.py [--layers 4] [--hidden 256] [--new 128]
"""

from __future__ import annotations

import argparse
import time

import torch

import pretrainkit
from pretrainkit.generation import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--new", type=int, default=128, help="tokens generated")
    parser.add_argument("--prompt", type=int, default=16, help="prompt tokens")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = pretrainkit.build_model(
        "gpt2-small",
        {
            "hidden_size": args.hidden,
            "encoder.num_layers": args.layers,
            "encoder.num_heads": args.hidden // 64,
            "encoder.ffn_size": 4 * args.hidden,
            "embedding.max_positions": args.prompt + args.new,
        },
    ).eval()
    prompt = [torch.randint(0, 50257, (args.prompt,)).tolist()]
    generate(model, prompt, 4)  # warm-up
    results = {}
    for use_cache in (True, False):
        start = time.perf_counter()
        out = generate(model, prompt, args.new, use_cache=use_cache)
        seconds = time.perf_counter() - start
        results[use_cache] = out
        name = "cache" if use_cache else "no cache"
        print(f"{name:9s} {args.new / seconds:8.1f} tokens/s ({seconds:.2f} s)")
    assert results[True] == results[False], "cached and uncached greedy outputs differ"


if __name__ == "__main__":
    main()
