"""ViT on scikit-learn's digits (real 8x8 handwritten digits), fixed seeded split: from scratch,
and after masked-patch pre-training on the training images; against an SVM on the same pixels.

    python3 benchmarks/vit_digits.py --data /work/runs/digits --out /work/runs/vision/digits \\
        --mode svm scratch pretrained --threads 1

``--data`` is written by ``benchmarks/digits_to_png.py`` when it does not exist yet (seed 0,
80/20 stratified). Each mode writes ``OUT/<mode>.json`` (test accuracy and macro-F1 on
``test.tsv``, the settings, date, load average); the ViT runs go through the public API:
``finetune`` (task image_classification) and ``preprocess`` + ``pretrain`` (objective
masked_patch), so the numbers are what the CLI gives. Give a new ``--out`` per run: nothing in
an existing one is replaced.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

import pretrainkit

MODEL = {  # 8x8 grey digits in 2x2 patches: 16 patches + [CLS]
    "hidden_size": 64,
    "embedding.image_size": 8,
    "embedding.patch_size": 2,
    "embedding.channels": 1,
    "embedding.max_positions": 17,
    "embedding.mask_patches": True,
    "encoder.num_layers": 2,
    "encoder.num_heads": 4,
    "encoder.ffn_size": 128,
}


def _stamp() -> dict:
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average": os.getloadavg(),
    }


def svm(args: argparse.Namespace) -> dict:
    """scikit-learn's SVC (RBF kernel, defaults) on the same PNG pixels, scaled to [0, 1]."""
    from sklearn.svm import SVC

    from pretrainkit.data.images import load_images, read_image_tsv

    def pixels(name: str) -> tuple[np.ndarray, list[str]]:
        data = read_image_tsv(args.data / f"{name}.tsv")
        images = load_images(data, list(range(len(data))), 8, 1)  # [n, 1, 8, 8] in [-1, 1]
        return ((images.flatten(1) + 1) / 2).numpy(), data.labels or []

    train_x, train_y = pixels("train")
    test_x, test_y = pixels("test")
    predicted = SVC().fit(train_x, train_y).predict(test_x)
    return {"accuracy": float(np.mean(predicted == np.array(test_y))), "model": "SVC()"}


def _finetune(args: argparse.Namespace, base: Path, out: Path) -> dict:
    from pretrainkit.workflows.finetune import finetune

    train = {
        "steps": args.steps,
        "lr": args.lr,
        "warmup": args.steps // 10,
        "weight_decay": 0.05,
        "log_every": 250,
        "eval_every": 1000,
        "precision": "fp32",
        "progress": False,
        "seed": args.seed,
    }
    result = finetune(
        "image_classification", base, args.data / "train.tsv", args.data / "test.tsv", out,
        train, batch_size=args.batch, task_options={"pooling": "mean", "dropout": args.dropout, "shift": args.shift},
    )  # fmt: skip
    return result["last_eval"]


def _body(args: argparse.Namespace) -> dict:
    dropout = {f"{k}.dropout": args.dropout for k in ("embedding", "encoder")}
    return {**MODEL, **dropout, "encoder.attention_dropout": args.dropout}


def scratch(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    base = pretrainkit.build_model("vit-base", {**_body(args), "targets": []})
    folder = base.save(args.out / "scratch-base")
    return _finetune(args, folder, args.out / "scratch")


def pretrained(args: argparse.Namespace) -> dict:
    if args.pretrained_from is not None:  # a finished masked_patch run of this script
        return _finetune(args, args.pretrained_from, args.out / "pretrained")
    from pretrainkit.data.preprocessing import preprocess
    from pretrainkit.tokenization import train_tokenizer
    from pretrainkit.training import TrainConfig
    from pretrainkit.workflows.pretrain import pretrain

    # preprocess takes a tokenizer for every objective; masked_patch reads no text with it.
    text = args.out / "tokenizer.txt"
    text.write_text("zero one two three four five six seven eight nine\n")
    train_tokenizer([text], "wordpiece", 50, args.out / "tokenizer")
    options = {"image_size": 8, "channels": 1, "patch_size": 2, "patch_mask_ratio": args.mask_ratio}
    preprocess([args.data / "train.tsv"], args.out / "tokenizer", "masked_patch", 17,
               args.out / "shards", objective_options=options)  # fmt: skip
    config = TrainConfig(
        steps=args.pretrain_steps, lr=args.lr, warmup=args.pretrain_steps // 10,
        weight_decay=0.05, log_every=250, precision="fp32", progress=False, seed=args.seed,
    )  # fmt: skip
    overrides = {**_body(args), "targets": [{"name": "masked_patch"}]}
    pretrain("vit-base", args.out / "shards", args.out / "pretrain", config, args.batch, overrides)
    return _finetune(args, args.out / "pretrain", args.out / "pretrained")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("/work/runs/digits"))
    parser.add_argument("--out", type=Path, default=Path("/work/runs/vision/digits"))
    parser.add_argument("--mode", nargs="+", default=["svm", "scratch", "pretrained"])
    parser.add_argument("--steps", type=int, default=3000, help="fine-tuning steps")
    parser.add_argument("--pretrain-steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--mask-ratio", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shift", type=int, default=0, help="task option shift (augmentation)")
    parser.add_argument(
        "--pretrained-from", type=Path, help="fine-tune this pre-training run, not a new one"
    )
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not (args.data / "train.tsv").exists():
        from digits_to_png import write_digits

        write_digits(args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    for mode in args.mode:
        start = time.perf_counter()
        result = {"svm": svm, "scratch": scratch, "pretrained": pretrained}[mode](args)
        record = {
            "mode": mode,
            **result,
            "seconds": time.perf_counter() - start,
            "settings": {k: str(v) for k, v in vars(args).items()},
            "split": json.loads((args.data / "split.json").read_text()),
            **_stamp(),
        }
        (args.out / f"{mode}.json").write_text(json.dumps(record, indent=2) + "\n")
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
