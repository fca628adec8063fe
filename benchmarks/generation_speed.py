"""Greedy generation tokens/s: pretrainkit with and without the KV cache against transformers'
``generate`` on the same converted model, in one process, runs interleaved.

A random HF model (GPT-2-shaped decoder, or T5-shaped encoder-decoder) is saved, converted with
``pretrainkit convert``'s code, and both sides generate the same number of new tokens from the
same prompt (no eos, nothing forced); the script checks that every run produced the same tokens
and prints the median tokens/s over the repeats.

Usage: python benchmarks/generation_speed.py [--family gpt2|t5|all] [--layers 4] [--hidden 256]
           [--new 128] [--prompt 16] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import transformers as tf

import pretrainkit
from pretrainkit.convert import convert_from_hf
from pretrainkit.generation import generate

VOCAB = 32000


def hf_model(family: str, layers: int, hidden: int, positions: int):
    if family == "gpt2":
        return tf.GPT2LMHeadModel(tf.GPT2Config(
            vocab_size=VOCAB, n_embd=hidden, n_layer=layers, n_head=hidden // 64,
            n_positions=positions, bos_token_id=0, eos_token_id=0,
        ))  # fmt: skip
    return tf.T5ForConditionalGeneration(tf.T5Config(
        vocab_size=VOCAB, d_model=hidden, d_kv=64, d_ff=4 * hidden, num_layers=layers,
        num_heads=hidden // 64, feed_forward_proj="gated-gelu", decoder_start_token_id=0,
    ))  # fmt: skip


def run(family: str, args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    hf = hf_model(family, args.layers, args.hidden, args.prompt + args.new + 1).eval()
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(Path(tmp) / "hf")
        ours = pretrainkit.load(convert_from_hf(Path(tmp) / "hf", Path(tmp) / "ours")).eval()
    prompt = torch.randint(5, VOCAB, (1, args.prompt), generator=torch.Generator().manual_seed(1))
    skip = 1 if family == "t5" else args.prompt  # HF returns the decoder start id / the prompt
    free = dict(eos_token_id=None, do_sample=False, num_beams=1, pad_token_id=0)
    if family == "t5":
        free.update(forced_eos_token_id=None, min_length=0)

    def hf_run(cache: bool) -> list[int]:
        with torch.inference_mode():
            out = hf.generate(
                prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=args.new,
                use_cache=cache, **free,
            )  # fmt: skip
        return out[0, skip:].tolist()

    runs: dict[str, Callable[[], list[int]]] = {
        "pretrainkit, KV cache": lambda: generate(ours, prompt, args.new)[0],
        "transformers generate, KV cache": lambda: hf_run(True),
        "pretrainkit, no cache": lambda: generate(ours, prompt, args.new, use_cache=False)[0],
        "transformers generate, no cache": lambda: hf_run(False),
    }
    for fn in runs.values():  # warm-up (first-call allocations, lazy imports)
        fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    outputs = {}
    for _ in range(args.repeats):
        for name, fn in runs.items():  # interleaved: drift hits every variant alike
            start = time.perf_counter()
            outputs[name] = fn()
            times[name].append(time.perf_counter() - start)
    reference = outputs["transformers generate, KV cache"]
    assert len(reference) == args.new
    assert all(out == reference for out in outputs.values()), "outputs differ"
    print(f"\n{family}: {args.layers} layers, hidden {args.hidden}, vocab {VOCAB}, prompt "
          f"{args.prompt}, {args.new} new tokens, batch 1, {args.threads} thread(s); "
          "all runs produced the same tokens")  # fmt: skip
    print("| path | tokens/s (median) |\n|---|---:|")
    for name, seconds in times.items():
        print(f"| {name} | {args.new / statistics.median(seconds):.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--family", choices=("gpt2", "t5", "all"), default="all")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--new", type=int, default=128, help="tokens generated")
    parser.add_argument("--prompt", type=int, default=16, help="prompt tokens")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for family in ("gpt2", "t5") if args.family == "all" else (args.family,):
        run(family, args)


if __name__ == "__main__":
    main()
