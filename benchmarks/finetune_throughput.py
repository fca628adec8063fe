"""Fine-tuning throughput: pretrainkit's task heads vs transformers' Bert*For* models with the
same config and batch, one process, interleaved round by round so machine noise hits both.

Heads: sequence classification (2 labels, pooled), token classification (7 tags), extractive
QA (start/end). Shape: all-MiniLM-L6-v2's (6 layers, hidden 384, 12 heads, FFN 1536) unless
--layers/--hidden/--heads/--ffn say otherwise. AdamW step included; fp32 and bf16 autocast.

    python benchmarks/finetune_throughput.py --precisions fp32 bf16 --threads 1

--inference times forward passes in eval mode, without labels or gradients (``evaluate`` and
``predict``; packed as a model fine-tuned with ``--pack`` evaluates) instead of training steps.

With --data (a ``label<TAB>text`` file, e.g. SST-2 train) and --vocab, classification runs on
real sentences instead of full random rows: each round trains on the same --steps batches of
--batch rows drawn from the file, tokenised with the vocabulary and cut to --seq. transformers
gets each batch padded to its longest row (what ``DataCollatorWithPadding`` does); pretrainkit
runs it padded the same way and packed (``collate_packed``, what ``finetune --pack`` does).
Tokens/s count the real tokens of the batch for all three.

With --heads-to-run token_classification, --data is a tagging TSV (header ``text_a<TAB>label``,
space-separated characters and tags, e.g. msra_ner train): one tag per token, [CLS] / [SEP] and
rows whose tokens do not match their characters one to one are skipped; tags are numbered in
order of appearance (at most 7, the head's labels).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch

import pretrainkit

HEADS = {
    "classification": ("BertForSequenceClassification", {"labels": ["0", "1"]}),
    "token_classification": ("BertForTokenClassification", {"labels": [str(i) for i in range(7)]}),
    "span_extraction": ("BertForQuestionAnswering", {}),
}


def make_batch(head: str, batch: int, seq: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 30522, (batch, seq), generator=g)
    inputs = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "token_type_ids": (torch.arange(seq) >= seq // 2).long().expand(batch, seq).clone(),
    }
    if head == "classification":
        inputs["labels"] = torch.randint(0, 2, (batch,), generator=g)
    elif head == "token_classification":
        inputs["labels"] = torch.randint(0, 7, (batch, seq), generator=g)
    else:
        inputs["start_positions"] = torch.randint(0, seq, (batch,), generator=g)
        inputs["end_positions"] = torch.randint(0, seq, (batch,), generator=g)
    return inputs


def real_batches(args: argparse.Namespace) -> dict[str, list[dict[str, torch.Tensor]]]:
    """--steps batches of --batch rows of --data, padded (both systems) and packed (ours)."""
    import random

    from pretrainkit.data.batching import collate, collate_packed
    from pretrainkit.tokenization import load_tokenizer

    tokenizer = load_tokenizer(args.vocab)
    with open(args.data, encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    tagging = args.run == ["token_classification"]
    if tagging:
        tags: dict[str, int] = {}
        examples = []
        for text, labels in rows[1:]:  # header text_a<TAB>label
            chars, names = text.split(), labels.split()
            ids = tokenizer.encode(" ".join(chars))
            if len(ids) != len(chars) or len(names) != len(chars):
                continue
            tag_ids = [tags.setdefault(name, len(tags)) for name in names]
            examples.append((ids, tag_ids))
        if len(tags) > 7:
            raise SystemExit(f"{args.data}: {len(tags)} tags, the head has 7")
    else:
        examples = [
            (tokenizer.encode(text), int(label)) for label, text in rows if label in ("0", "1")
        ]
    rng = random.Random(0)
    picked = [rng.sample(examples, args.batch) for _ in range(args.steps)]
    out: dict[str, list[dict[str, torch.Tensor]]] = {"padded": [], "packed": []}
    for chosen in picked:
        instances = []
        for ids, label in chosen:
            inputs, types = tokenizer.build_inputs(ids, None, args.seq)
            if tagging:  # -100 on [CLS], [SEP] and what the cut dropped
                target = np.full(len(inputs), -100, dtype=np.int64)
                kept = label[: len(inputs) - 2]
                target[1 : 1 + len(kept)] = kept
            else:
                target = np.asarray(label, dtype=np.int64)
            instances.append({
                "input_ids": np.asarray(inputs, dtype=np.int64),
                "token_type_ids": np.asarray(types, dtype=np.int64),
                "labels": target,
            })  # fmt: skip
        out["padded"].append(collate(instances, tokenizer.pad_id))
        out["packed"].append(collate_packed(instances, tokenizer.pad_id, args.pack_width))
    return out


def models(head: str, args: argparse.Namespace):
    import transformers as tf

    shape = {
        "hidden_size": args.hidden,
        "encoder.num_layers": args.layers,
        "encoder.num_heads": args.heads,
        "encoder.ffn_size": args.ffn,
        "embedding.dropout": 0.1,
    }
    hf_class, options = HEADS[head]
    ours = pretrainkit.build_model(
        "bert-base", {**shape, "targets": [{"name": head, "options": options}]}
    )
    config = tf.BertConfig(
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        intermediate_size=args.ffn,
        num_labels=len(options.get("labels", [])) or 2,
        attn_implementation="sdpa",
    )
    theirs = getattr(tf, hf_class)(config)
    return ours.train(), theirs.train()


def step_fn(model, batches, precision: str, inference: bool = False):
    """One training step per call, on the next of ``batches`` in turn; with ``inference`` one
    forward pass without labels or gradients in eval mode instead (what ``evaluate`` and
    ``predict`` run)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    turn = iter(range(1 << 62))

    def step():
        batch = batches[next(turn) % len(batches)]
        if inference:
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            with (
                torch.no_grad(),
                torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"),
            ):
                model(**inputs)
            return
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads-to-run", nargs="+", default=list(HEADS), dest="run")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--ffn", type=int, default=1536)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--data",
        help="real sentences: label<TAB>text rows (classification) or a tagging TSV "
        "text_a<TAB>label (token_classification)",
    )
    parser.add_argument("--vocab", help="WordPiece vocabulary for --data")
    parser.add_argument(
        "--pack-width",
        type=int,
        default=None,
        help="tokens per packed row (default: the batch's longest example, as finetune --pack)",
    )
    parser.add_argument(
        "--inference",
        action="store_true",
        help="time forward passes in eval mode without labels or gradients (evaluate / "
        "predict; packed: what a model fine-tuned with --pack runs) instead of training steps",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.data and (
        not args.vocab or args.run not in (["classification"], ["token_classification"])
    ):
        parser.error("--data needs --vocab and one of --heads-to-run classification / "
                     "token_classification")  # fmt: skip
    real = real_batches(args) if args.data else None
    for head in args.run:
        for precision in args.precisions:
            torch.manual_seed(0)
            ours, theirs = models(head, args)
            if args.inference:
                ours.eval()
                theirs.eval()
            if real is None:
                batch = [make_batch(head, args.batch, args.seq)]
                steps = {"pretrainkit": step_fn(ours, batch, precision, args.inference),
                         "transformers": step_fn(theirs, batch, precision, args.inference)}  # fmt: skip
            else:
                steps = {
                    "pretrainkit": step_fn(ours, real["padded"], precision, args.inference),
                    "pretrainkit_packed": step_fn(ours, real["packed"], precision, args.inference),
                    "transformers": step_fn(theirs, real["padded"], precision, args.inference),
                }
            for step in steps.values():  # warm-up: allocator, autocast caches
                step()
                step()
            per_round: dict[str, list[float]] = {k: [] for k in steps}
            for _ in range(args.rounds):
                for name, step in steps.items():
                    start = time.perf_counter()
                    for _ in range(args.steps):
                        step()
                    per_round[name].append(time.perf_counter() - start)
            if real is None:
                tokens = args.batch * args.seq * args.steps
            else:  # the real tokens of the round's batches
                tokens = sum(int(b["attention_mask"].sum()) for b in real["padded"])
            rates = {k: sorted(tokens / t for t in v) for k, v in per_round.items()}
            ratios = {}
            for name in per_round:
                if name != "transformers":
                    r = sorted(a / b for a, b in zip(per_round["transformers"], per_round[name]))
                    ratios[name] = r
            print(json.dumps({
                "head": head,
                "precision": precision,
                "mode": "inference" if args.inference else "training",
                **{f"{k}_tokens_per_s_median": round(v[len(v) // 2], 1) for k, v in rates.items()},
                **{f"{k}_ratio_median": round(r[len(r) // 2], 3) for k, r in ratios.items()},
                **{f"{k}_ratio_min_max": [round(r[0], 3), round(r[-1], 3)]
                   for k, r in ratios.items()},
                **({} if real is None else {
                    "rows_per_batch": args.batch,
                    "padded_tokens_per_batch": np.mean(
                        [b["input_ids"].numel() for b in real["padded"]]).item(),
                    "packed_tokens_per_batch": np.mean(
                        [b["input_ids"].numel() for b in real["packed"]]).item(),
                    "real_tokens_per_batch": tokens / args.steps,
                }),
            }), flush=True)  # fmt: skip
    print(json.dumps({
        "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average": os.getloadavg(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
