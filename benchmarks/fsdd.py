"""Free Spoken Digit Dataset, leave one speaker out: ``speech_classification`` and
``speech2text`` from random init, against mean/std-pooled log-mel + logistic regression / SVM.

For every one of the 5 speakers, both tasks train on the other four speakers' 2,000 recordings
and are scored once, at the end, on the held-out speaker's 500 (no model selection on them).
Transcript = the digit's English word, written by a character-level WordPiece vocabulary. The
baseline pools the same 80 log-mel bins (``data/audio.py``, before normalisation: mean and
standard deviation over frames); its word accuracy would be its classification accuracy (one
word per recording). Writes the TSVs, models and ``results.json`` (after every fold) under
``--out`` and prints a Markdown table; ``--report RUN...`` merges the tables of several runs
(e.g. folds or tasks run as separate processes).

    python benchmarks/fsdd.py --data ../shared/data/fsdd/recordings --out /work/runs/fsdd \
        --threads 1 --steps 1000
"""

from __future__ import annotations

import argparse
import json
import os
import string
import time
from pathlib import Path

import numpy as np
import torch

import pretrainkit
from pretrainkit.data.audio import Filterbank, read_wav
from pretrainkit.tokenization import load_tokenizer
from pretrainkit.workflows.finetune import finetune

WORDS = "zero one two three four five six seven eight nine".split()
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [
    *string.ascii_lowercase,
    *(f"##{c}" for c in string.ascii_lowercase),
]
OPTIONS = {"sample_rate": 8000, "num_mel_bins": 80, "spec_augment": True,
           "freq_mask_width": 15, "time_mask_width": 10, "speed_perturb": True}  # fmt: skip


def write_tsvs(recordings: Path, out: Path) -> list[str]:
    """Per held-out speaker: train/test TSVs of both tasks (absolute audio paths)."""
    files = sorted(recordings.glob("*.wav"))
    rows = [(f, *f.stem.split("_")[:2]) for f in files]  # (path, digit, speaker)
    speakers = sorted({speaker for _, _, speaker in rows})
    for held in speakers:
        folder = out / "tsv" / held
        folder.mkdir(parents=True, exist_ok=True)
        for split, inside in (("train", False), ("test", True)):
            chosen = [(f, d) for f, d, s in rows if (s == held) == inside]
            cls = ["label\taudio", *(f"{d}\t{f.resolve()}" for f, d in chosen)]
            s2t = ["audio\ttext", *(f"{f.resolve()}\t{WORDS[int(d)]}" for f, d in chosen)]
            (folder / f"cls_{split}.tsv").write_text("\n".join(cls) + "\n")
            (folder / f"s2t_{split}.tsv").write_text("\n".join(s2t) + "\n")
    return speakers


def model_config(args: argparse.Namespace, seq2seq: bool) -> dict:
    layers = {"name": "transformer", "num_layers": args.layers, "num_heads": 4,
              "ffn_size": 4 * args.hidden, "norm_position": "pre", "final_norm": True}  # fmt: skip
    config = {
        "hidden_size": args.hidden,
        "vocab_size": 0,
        "embedding": {
            "parts": ["speech", "sinusoidal"],
            "num_mel_bins": args.num_mel_bins,
            "conv_channels": 2 * args.hidden,
            "max_positions": 512,
        },  # fmt: skip
        "encoder": layers,
        "targets": [{"name": "classification", "options": {"labels": WORDS}}],
    }
    if seq2seq:
        config |= {
            "vocab_size": len(VOCAB),
            "tgt_embedding": {"parts": ["word", "sinusoidal"], "max_positions": 32},
            "decoder": {
                **layers,
                "num_layers": args.decoder_layers,
                "causal": True,
                "start_id": 2,
                "pad_id": 0,
            },  # fmt: skip
            "share_embedding": False,
            "targets": [{"name": "seq2seq_lm"}],
        }
    return config


def base_models(args: argparse.Namespace, out: Path) -> dict[str, Path]:
    (out / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    bases = {}
    for task, seq2seq in (("speech_classification", False), ("speech2text", True)):
        folder = out / f"base-{task}"
        if not folder.exists():
            torch.manual_seed(args.seed)
            model = pretrainkit.build_model(model_config(args, seq2seq))
            if seq2seq:
                model.tokenizer = load_tokenizer(out / "vocab.txt")
            model.save(folder)
        bases[task] = folder
    return bases


def baseline(train_tsv: Path, test_tsv: Path) -> dict[str, float]:
    """Mean and standard deviation over frames of the raw (unnormalised) log-mel features, then
    logistic regression or an RBF SVM on the standardised 160 numbers."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    bank = Filterbank(8000, 80)

    def pooled(tsv: Path) -> tuple[np.ndarray, np.ndarray]:
        lines = tsv.read_text().splitlines()[1:]
        rows, labels = [], []
        for line in lines:
            label, audio = line.split("\t")
            features = bank(read_wav(audio, 8000).samples).numpy()  # [frames, 80]
            rows.append(np.concatenate([features.mean(0), features.std(0)]))
            labels.append(label)
        return np.stack(rows), np.array(labels)

    (x_train, y_train), (x_test, y_test) = pooled(train_tsv), pooled(test_tsv)
    scores = {}
    for name, model in (("logreg", LogisticRegression(C=1.0, max_iter=5000)),
                        ("svm", SVC(C=10.0))):  # fmt: skip
        classifier = make_pipeline(StandardScaler(), model).fit(x_train, y_train)
        scores[name] = float((classifier.predict(x_test) == y_test).mean())
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/fsdd/recordings"))
    parser.add_argument("--out", type=Path, default=Path("/work/runs/fsdd"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--decoder-layers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-mel-bins", type=int, default=80, help="log-mel bins per frame")
    parser.add_argument(
        "--freq-mask-width", type=int, default=15, help="widest SpecAugment frequency mask"
    )
    parser.add_argument(
        "--vtlp", type=float, default=0.0, help="VTLP warp range on training instances (0 = off)"
    )
    parser.add_argument("--speakers", nargs="*", help="only these held-out speakers")
    parser.add_argument("--tasks", nargs="*", default=["speech_classification", "speech2text"])
    parser.add_argument("--report", type=Path, nargs="*", help="only merge these runs' results")
    args = parser.parse_args()
    if args.report:
        report(args.report)
        return
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    speakers = args.speakers or write_tsvs(args.data, args.out)
    if args.speakers:
        write_tsvs(args.data, args.out)
    bases = base_models(args, args.out)
    train = {"steps": args.steps, "lr": args.lr, "warmup": args.steps // 10, "seed": args.seed,
             "precision": "fp32", "progress": False, "log_every": 100}  # fmt: skip
    results: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "folds": {}}
    for held in speakers:
        folder = args.out / "tsv" / held
        fold: dict = {}
        if "speech_classification" in args.tasks:  # the baseline classifies too
            fold["baseline"] = baseline(folder / "cls_train.tsv", folder / "cls_test.tsv")
        for task in args.tasks:
            prefix = "cls" if task == "speech_classification" else "s2t"
            start = time.perf_counter()
            result = finetune(
                task, bases[task], folder / f"{prefix}_train.tsv", folder / f"{prefix}_test.tsv",
                args.out / "runs" / held / task, dict(train), batch_size=args.batch_size,
                task_options={
                    **OPTIONS,
                    "num_mel_bins": args.num_mel_bins,
                    "freq_mask_width": args.freq_mask_width,
                    "vtlp": args.vtlp,
                    **({"target_length": 16} if prefix == "s2t" else {}),
                },
                overwrite=True,
            )  # fmt: skip
            fold[task] = {**result["last_eval"], "seconds": round(time.perf_counter() - start, 1)}
        results["folds"][held] = fold
        results["load_average"] = os.getloadavg()
        print(held, json.dumps(fold), flush=True)
        # After every fold, so that a run stopped early keeps the folds it finished.
        (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    report([args.out])


def report(runs: list[Path]) -> None:
    """One table (and the means over held-out speakers) from the results.json of ``runs``."""
    folds: dict[str, dict] = {}
    for run in runs:
        # A finished fine-tuning run's last line holds its held-out scores ("dev/<metric>"),
        # also for a process stopped before it wrote results.json.
        for metrics in sorted(run.glob("runs/*/*/metrics.jsonl")):
            last = json.loads(metrics.read_text().splitlines()[-1])
            scores = {k[4:]: v for k, v in last.items() if k.startswith("dev/")}
            if scores:
                folds.setdefault(metrics.parts[-3], {})[metrics.parts[-2]] = scores
        if (run / "results.json").is_file():
            for held, fold in json.loads((run / "results.json").read_text())["folds"].items():
                folds.setdefault(held, {}).update(fold)
    folds = dict(sorted(folds.items()))
    nan = float("nan")
    rows = {
        "log-mel + logreg": [f.get("baseline", {}).get("logreg", nan) for f in folds.values()],
        "log-mel + SVM": [f.get("baseline", {}).get("svm", nan) for f in folds.values()],
        "classification acc": [
            f.get("speech_classification", {}).get("accuracy", nan) for f in folds.values()
        ],  # fmt: skip
        "s2t word acc": [
            f.get("speech2text", {}).get("word_accuracy", nan) for f in folds.values()
        ],
        "s2t WER": [f.get("speech2text", {}).get("wer", nan) for f in folds.values()],
        "s2t CER": [f.get("speech2text", {}).get("cer", nan) for f in folds.values()],
    }
    print("| held-out speaker | " + " | ".join(folds) + " | mean |")
    print("|---" * (len(folds) + 2) + "|")
    for name, values in rows.items():
        cells = " | ".join(f"{v:.3f}" for v in values)
        print(f"| {name} | {cells} | **{np.mean(values):.3f}** |")


if __name__ == "__main__":
    main()
