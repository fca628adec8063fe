"""CSL (Chinese scientific literature) as text2text: a T5-shaped model from random init.

    python benchmarks/csl.py --data ../shared/data --out /work/runs/csl [--tasks ts,kg] \
        [--base FOLDER --name pretrained]

Four CSL tasks, rows ``prompt<TAB>text_a<TAB>text_b`` (no header), read by ``--task text2text``:
``to category`` (cls_ctg: title → one of 13 categories; train 8,000 / dev 1,000), ``to
discipline`` (cls_dcp: abstract → one of 67 disciplines), ``to keywords`` (kg: abstract and title
→ keywords joined by ``_``), ``to title`` (ts: abstract → title). cls_dcp, kg and ts ship only
their dev set (1,000 rows): ``split`` shuffles it with seed 0 and keeps 800 rows to train on and
200 to report on (the same split the baselines use, ``csl_baseline.py``).

The model is T5 v1.0 small's shape (pre-RMSNorm, relative position bias, ReLU FFN, no biases,
tied and rescaled head) shrunk to fit a CPU budget of about 10 min per task on one thread:
hidden 128 (512), 2 + 2 layers (6 + 6), 4 heads of 32 (8 of 64), FFN 512 (2048); the Google
Chinese vocabulary (21,128 WordPieces, character-level for Chinese). ``--shape bart-base``
shrinks BART base the same way (learned positions up to 256). Sources are cut to 128 tokens
(64 for titles): most abstracts are longer. ``--base`` fine-tunes a
pre-trained folder instead (``csl_pretrain.sh``). ``--head classification`` puts a softmax
head on the same model's encoder instead (categories only: ``--task classification``, which
fine-tunes a seq2seq body's encoder alone). Each task writes ``OUT/NAME-TASK/`` (the run
folder) and one JSON line of its scores to ``OUT/NAME-TASK.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

# name → (CSL folder, metrics (first = selection), source tokens, target tokens, steps, batch)
TASKS = {
    "ctg": ("cls_ctg", "accuracy,rouge_l", 64, 8, 600, 32),
    "dcp": ("cls_dcp", "accuracy,rouge_l", 128, 12, 300, 16),
    "kg": ("kg", "keyword_f1,rouge_l", 128, 40, 300, 16),
    "ts": ("ts", "rouge_l,accuracy", 128, 48, 300, 16),
}
BODY = {"hidden_size": 128, **{f"{stack}.{key}": value for stack in ("encoder", "decoder")
                                for key, value in (("num_layers", 2), ("num_heads", 4),
                                                   ("ffn_size", 512))}}  # fmt: skip
SHAPES = {  # preset → its overrides (see the module docstring); csl_pretrain.sh uses the same
    "t5-small": {
        **BODY,
        "encoder.head_dim": 32,
        "decoder.head_dim": 32,
        "targets": [{"name": "seq2seq_lm", "scale": 128**-0.5}],  # T5's hidden ** -0.5
    },
    "bart-base": {
        **BODY,
        "embedding.max_positions": 258,  # 256 tokens behind BART's position offset of 2
        "tgt_embedding.max_positions": 258,
        # The Google vocabulary's ids: the decoder starts from [CLS] and pads with [PAD].
        "decoder.start_id": 101,
        "decoder.pad_id": 0,
    },
}


def split(data: Path, task: str, out: Path) -> tuple[Path, Path]:
    """``(train, eval)`` files of ``task`` under ``out/data``: cls_ctg's own train and dev, or
    a seed-0 shuffle of a dev-only task's 1,000 rows into 800 to train on and 200 to report."""
    folder = TASKS[task][0]
    target = out / "data" / folder
    train, held_out = target / "train.tsv", target / "eval.tsv"
    if train.is_file() and held_out.is_file():
        return train, held_out
    target.mkdir(parents=True, exist_ok=True)
    if (data / "csl" / folder / "train.tsv").is_file():
        train.write_bytes((data / "csl" / folder / "train.tsv").read_bytes())
        held_out.write_bytes((data / "csl" / folder / "dev.tsv").read_bytes())
        return train, held_out
    rows = (data / "csl" / folder / "dev.tsv").read_text(encoding="utf-8").splitlines()
    order = np.random.default_rng(0).permutation(len(rows))
    cut = len(rows) * 4 // 5
    train.write_text("".join(rows[i] + "\n" for i in order[:cut]), encoding="utf-8")
    held_out.write_text("".join(rows[i] + "\n" for i in order[cut:]), encoding="utf-8")
    return train, held_out


def classification_files(train: Path, held_out: Path) -> tuple[Path, Path]:
    """The same rows as ``label<TAB>text_a`` files with a header, for ``--task classification``."""
    files = []
    for path in (train, held_out):
        target = path.with_suffix(".classification.tsv")
        rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]
        lines = ["label\ttext_a", *(f"{label}\t{text}" for _, text, label in rows)]
        target.write_text("\n".join(lines) + "\n", encoding="utf-8")
        files.append(target)
    return files[0], files[1]


def corpus(data: Path, out: Path) -> Path:
    """``OUT/csl_corpus.txt``, CSL text for pre-training that no held-out row contains: the
    abstracts of the dev-only tasks' training part (one document each) and cls_ctg's training
    titles. (cls_ctg's dev titles are the titles of the same 1,000 papers as the dev-only
    tasks, so no title of those papers goes in.)"""
    path = out / "csl_corpus.txt"
    train, _ = split(data, "ts", out)
    ctg, _ = split(data, "ctg", out)
    abstracts = [line.split("\t")[1] for line in train.read_text(encoding="utf-8").splitlines()]
    titles = [line.split("\t")[1] for line in ctg.read_text(encoding="utf-8").splitlines()]
    path.write_text("".join(text + "\n\n" for text in abstracts + titles), encoding="utf-8")
    return path


def scratch_base(data: Path, out: Path, shape: str) -> Path:
    """The shrunk ``shape`` from random init (seed 0) with the Google Chinese vocabulary."""
    import torch

    import pretrainkit
    from pretrainkit.tokenization import load_tokenizer

    folder = out / f"base-{shape}-scratch"
    if (folder / "config.yaml").is_file():
        return folder
    tokenizer = load_tokenizer(data / "vocab" / "google_zh_vocab.txt")
    torch.manual_seed(0)
    model = pretrainkit.build_model(shape, {**SHAPES[shape], "vocab_size": tokenizer.vocab_size})
    model.tokenizer = tokenizer
    return model.save(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("PRETRAINKIT_DATA", "")))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tasks", default=",".join(TASKS), help="from " + ", ".join(TASKS))
    parser.add_argument("--base", type=Path, help="a pre-trained model folder (default: scratch)")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="t5-small", help="of scratch")
    parser.add_argument("--prepare", action="store_true", help="write the splits and corpus only")
    parser.add_argument("--name", default="scratch", help="names the runs: NAME-TASK")
    parser.add_argument("--steps", type=int, help="overrides every task's number of steps")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--head",
        choices=("text2text", "classification"),
        default="text2text",
        help="classification: a softmax head on the encoder (task ctg only)",
    )
    args = parser.parse_args()
    if args.head == "classification" and set(args.tasks.split(",")) != {"ctg"}:
        parser.error("--head classification: only --tasks ctg (one label set, seen in training)")
    import torch

    from pretrainkit.workflows.finetune import finetune

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.prepare:
        print(corpus(args.data, args.out))
        return
    base = args.base or scratch_base(args.data, args.out, args.shape)
    for task in args.tasks.split(","):
        _, metric, source_length, target_length, steps, batch = TASKS[task]
        train, held_out = split(args.data, task, args.out)
        rows = [sum(1 for _ in path.open(encoding="utf-8")) for path in (train, held_out)]
        run = args.out / f"{args.name}-{task}"
        started = time.time()
        training = {"steps": args.steps or steps, "lr": args.lr,
                    "warmup": (args.steps or steps) // 10, "log_every": 50, "precision": "fp32",
                    "progress": False, "seed": 0}  # fmt: skip
        if args.head == "classification":
            train, held_out = classification_files(train, held_out)
            result = finetune("classification", base, train, held_out, run, training,
                              batch_size=batch, task_options={"seq_length": source_length})  # fmt: skip
        else:
            result = finetune(
                "text2text", base, train, held_out, run, training, batch_size=batch,
                task_options={"seq_length": source_length, "target_length": target_length,
                              "metric": metric},
            )  # fmt: skip
        line = {
            "task": task,
            "model": str(base),
            "head": args.head,
            "train_rows": rows[0],
            "eval_rows": rows[1],
            "steps": args.steps or steps,
            "batch": batch,
            "seconds": round(time.time() - started),
            "load_average": os.getloadavg()[0],
            **{k: round(v, 4) for k, v in result["last_eval"].items()},
        }
        (args.out / f"{args.name}-{task}.json").write_text(json.dumps(line) + "\n")
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
