"""Span-corruption pre-training step throughput: pretrainkit T5 vs transformers' T5.

Both models are built from the same t5-small configuration (random init, dropout on) and take
AdamW steps on the same batch of T5 span-corruption instances (random token windows, 15 %
noise, mean span 3, sentinels <extra_id_i> = 32099 - i), in one process, interleaved round by
round so that machine noise hits both alike. Tokens/s counts encoder plus decoder positions.

    python benchmarks/seq2seq_throughput.py --batch 8 --seq 256 --precisions fp32 bf16 --threads 1
    python benchmarks/seq2seq_throughput.py --profile   # where pretrainkit's step spends time
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import UTC, datetime

import numpy as np
import torch

import pretrainkit
from pretrainkit.data.noising import span_corruption
from pretrainkit.data.objectives import get_objective
from pretrainkit.data.seq2seq import seq2seq_collate

PRESET = "t5-small"


def make_batch(vocab: int, batch: int, seq: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """``batch`` span-corrupted random windows whose sources fill ``seq`` positions."""
    rng = np.random.default_rng(seed)
    raw = get_objective("t5").raw_length(seq)
    sentinels = [vocab - 29 - i for i in range(100)]  # T5: <extra_id_0> = 32099
    instances = []
    for _ in range(batch):
        tokens = rng.integers(3, vocab - 128, size=raw)
        source, target = span_corruption(tokens, rng, 0.15, 3.0, sentinels, eos_id=1)
        instances.append({"input_ids": source, "labels": target})
    return seq2seq_collate(instances, pad_id=0)


def hf_model():
    import transformers as tf

    c = pretrainkit.load_model_config(PRESET)
    assert c.decoder is not None
    config = tf.T5Config(
        vocab_size=c.vocab_size,
        d_model=c.hidden_size,
        d_kv=c.encoder.head_dim,
        d_ff=c.encoder.ffn_size,
        num_layers=c.encoder.num_layers,
        num_decoder_layers=c.decoder.num_layers,
        num_heads=c.encoder.num_heads,
        relative_attention_num_buckets=c.encoder.relative_buckets,
        relative_attention_max_distance=c.encoder.relative_max_distance,
        dropout_rate=c.encoder.dropout,
        layer_norm_epsilon=c.encoder.norm_eps,
        feed_forward_proj="relu",
        tie_word_embeddings=True,
        decoder_start_token_id=c.decoder.start_id,
        pad_token_id=c.decoder.pad_id,
    )
    return tf.T5ForConditionalGeneration(config)


def step_fn(model, batch, precision: str):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def measure(step, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - start


def profile(step, rows: int = 15) -> None:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=256, help="encoder positions per instance")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--steps", type=int, default=2, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--profile", action="store_true", help="profile one step of each side")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    vocab = pretrainkit.load_model_config(PRESET).vocab_size
    batch = make_batch(vocab, args.batch, args.seq)
    shape = {
        "batch": args.batch,
        "source": batch["input_ids"].shape[1],
        "target": batch["labels"].shape[1],
    }
    print(json.dumps(shape), flush=True)
    positions = batch["attention_mask"].sum() + batch["decoder_attention_mask"].sum()
    for precision in args.precisions:
        torch.manual_seed(0)
        ours = pretrainkit.build_model(PRESET).train()
        theirs = hf_model().train()
        steps = {
            "pretrainkit": step_fn(ours, batch, precision),
            "transformers": step_fn(theirs, batch, precision),
        }
        losses = {k: round(s(), 3) for k, s in steps.items()}  # warm-up; both near ln(vocab)
        if args.profile:
            for name, s in steps.items():
                print(f"--- {name} {precision}")
                profile(s)
            continue
        times = {k: 0.0 for k in steps}
        round_ratios = []
        for _ in range(args.rounds):
            spent = {k: measure(s, args.steps) for k, s in steps.items()}
            round_ratios.append(round(spent["transformers"] / spent["pretrainkit"], 3))
            for k, t in spent.items():
                times[k] += t
        tokens = int(positions) * args.steps * args.rounds
        row = {
            "model": PRESET,
            "precision": precision,
            "first_loss": losses,
            **{f"{k}_tokens_per_s": round(tokens / t, 1) for k, t in times.items()},
            **{
                f"{k}_s_per_step": round(t / (args.steps * args.rounds), 3)
                for k, t in times.items()
            },
        }
        row["ratio_vs_hf"] = round(times["transformers"] / times["pretrainkit"], 3)
        row["round_ratios"] = round_ratios
        row["load_average"] = [round(x, 2) for x in os.getloadavg()]
        print(json.dumps(row), flush=True)
    print(
        json.dumps(
            {
                "date": datetime.now(UTC).isoformat(timespec="minutes"),
                "machine": platform.processor() or platform.machine(),
                "cores": os.cpu_count(),
                "load_average": [round(x, 2) for x in os.getloadavg()],
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
