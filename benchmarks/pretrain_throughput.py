"""Pre-training throughput: pretrainkit BERT vs transformers' BertForPreTraining, same config.

Both train MLM + NSP on the same random batches (15% masked), with AdamW, in one process,
interleaved round by round so that machine noise hits both alike.

    python benchmarks/pretrain_throughput.py --presets bert-tiny bert-small --precisions fp32 bf16
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

import pretrainkit


def make_batch(vocab: int, batch: int, seq: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, vocab, (batch, seq), generator=g)
    masked = torch.rand(batch, seq, generator=g) < 0.15
    labels = torch.where(masked, ids, torch.full_like(ids, -100))
    return {
        "input_ids": ids.masked_fill(masked, 103),
        "attention_mask": torch.ones_like(ids),
        "token_type_ids": (torch.arange(seq) >= seq // 2).long().expand(batch, seq).clone(),
        "labels": labels,
        "pair_labels": torch.randint(0, 2, (batch,), generator=g),
    }


def hf_model(name: str):
    import transformers as tf

    c = pretrainkit.load_model_config(name)
    config = tf.BertConfig(
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        num_hidden_layers=c.encoder.num_layers,
        num_attention_heads=c.encoder.num_heads,
        intermediate_size=c.encoder.ffn_size,
        max_position_embeddings=c.embedding.max_positions,
        attn_implementation="sdpa",
    )
    return tf.BertForPreTraining(config)


def step_fn(model, batch, precision: str, hf: bool):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    inputs = dict(batch)
    if hf:
        inputs["next_sentence_label"] = inputs.pop("pair_labels")

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(**inputs).loss
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["bert-tiny", "bert-small"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    for name in args.presets:
        batch = make_batch(30522, args.batch, args.seq)
        for precision in args.precisions:
            torch.manual_seed(0)
            ours = pretrainkit.build_model(name).train()
            theirs = hf_model(name).train()
            steps = {
                "pretrainkit": step_fn(ours, batch, precision, False),
                "transformers": step_fn(theirs, batch, precision, True),
            }
            for s in steps.values():  # warm-up (allocator, autocast caches)
                s()
                s()
            times = {k: 0.0 for k in steps}
            for _ in range(args.rounds):
                for k, s in steps.items():
                    times[k] += measure(s, args.steps)
            tokens = args.batch * args.seq * args.steps * args.rounds
            row = {
                "model": name,
                "precision": precision,
                **{f"{k}_tokens_per_s": round(tokens / t, 1) for k, t in times.items()},
            }
            row["ratio_vs_hf"] = round(times["transformers"] / times["pretrainkit"], 3)
            results.append(row)
            print(json.dumps(row), flush=True)
    by = {(r["model"], r["precision"]): r for r in results}
    for name in args.presets:
        if (name, "fp32") in by and (name, "bf16") in by:
            speedup = (
                by[(name, "bf16")]["pretrainkit_tokens_per_s"]
                / by[(name, "fp32")]["pretrainkit_tokens_per_s"]
            )
            print(json.dumps({"model": name, "bf16_over_fp32": round(speedup, 3)}))
    print(
        json.dumps(
            {
                "machine": platform.processor() or platform.machine(),
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
