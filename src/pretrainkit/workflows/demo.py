"""The quickstart: SST-2 from the data mirror, from raw text to a dev accuracy in minutes."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from pretrainkit.errors import DataError, PretrainkitError
from pretrainkit.paths import find_data_dir

log = logging.getLogger(__name__)

MARKER = ".pretrainkit-demo"

# Sized for 2 CPU cores and about 10 minutes end to end (measured in BENCHMARKS.md).
DEMO_MODEL = "bert-mini"
DEMO_OVERRIDES = {
    "embedding.max_positions": 128,
    "targets": [{"name": "mlm"}],
}
DEMO = {
    "vocab_size": 8000,
    "seq_length": 128,
    "pretrain_steps": 1200,
    "pretrain_batch": 32,
    "pretrain_lr": 1e-3,
    "finetune_epochs": 3.0,
    "finetune_batch": 32,
    "finetune_lr": 1e-4,
    "finetune_seq_length": 64,
}


def sst2_to_tsv(source: Path, tsv: Path, corpus: Path | None = None) -> int:
    """SST-2's ``label<TAB>sentence`` rows → a task TSV with header (and the sentences as a corpus)."""
    rows = []
    with source.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                raise DataError("not UTF-8", source, number) from None
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != 2 or fields[0] not in ("0", "1"):
                raise DataError(
                    f"expected 'label<TAB>sentence' with label 0 or 1, got {line[:80]!r}",
                    source,
                    number,
                )
            rows.append(fields)
    if not rows:
        raise DataError("no rows", source)
    with tsv.open("w", encoding="utf-8") as f:
        f.write("label\ttext_a\n")
        f.writelines(f"{label}\t{text}\n" for label, text in rows)
    if corpus is not None:
        # Each sentence is its own document: SST-2 sentences are independent snippets.
        with corpus.open("w", encoding="utf-8") as f:
            f.writelines(f"{text}\n\n" for _, text in rows)
    return len(rows)


def _fresh_folder(out: Path) -> None:
    if out.exists():
        if not (out / MARKER).exists():
            raise PretrainkitError(f"{out} exists and is not a demo folder; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("written by pretrainkit demo; replaced by the next demo run\n")


def run_demo(
    data: str | None = None,
    out: str | Path = "runs/demo",
    vocab: str | None = None,
    pretrain_steps: int | None = None,
    finetune_epochs: float | None = None,
    precision: str = "auto",
) -> dict:
    from pretrainkit.data import preprocess
    from pretrainkit.model import load
    from pretrainkit.tasks.classification import read_classification_tsv
    from pretrainkit.tokenization import train_tokenizer
    from pretrainkit.training import TrainConfig
    from pretrainkit.training.plot import plot_run
    from pretrainkit.workflows.finetune import evaluate_model, finetune
    from pretrainkit.workflows.pretrain import pretrain

    start = time.perf_counter()
    data_dir = find_data_dir(data, required=("sst2/train.tsv", "sst2/dev.tsv"))
    out = Path(out)
    _fresh_folder(out)
    work = out / "data"
    work.mkdir()
    n_train = sst2_to_tsv(data_dir / "sst2/train.tsv", work / "train.tsv", work / "corpus.txt")
    n_dev = sst2_to_tsv(data_dir / "sst2/dev.tsv", work / "dev.tsv")
    log.info("SST-2: %d train, %d dev sentences from %s", n_train, n_dev, data_dir)

    if vocab is None:
        vocab = str(out / "tokenizer")
        train_tokenizer([work / "corpus.txt"], "wordpiece", DEMO["vocab_size"], vocab)
    preprocess([work / "corpus.txt"], vocab, "mlm", DEMO["seq_length"], out / "shards", workers=2)

    steps = pretrain_steps or DEMO["pretrain_steps"]
    pre = pretrain(
        DEMO_MODEL,
        out / "shards",
        out / "pretrain",
        TrainConfig(
            steps=steps,
            lr=DEMO["pretrain_lr"],
            warmup=steps // 10,
            scheduler="linear",
            precision=precision,
            log_every=20,
            save_every=0,
        ),
        batch_size=DEMO["pretrain_batch"],
        overrides=DEMO_OVERRIDES,
    )
    fine = finetune(
        "classification",
        out / "pretrain" / "model",
        work / "train.tsv",
        work / "dev.tsv",
        out / "finetune",
        TrainConfig(
            steps=1,
            lr=DEMO["finetune_lr"],
            warmup=0,
            scheduler="linear",
            precision=precision,
            log_every=20,
            save_every=0,
            eval_every=200,
        ),
        batch_size=DEMO["finetune_batch"],
        seq_length=DEMO["finetune_seq_length"],
        epochs=finetune_epochs or DEMO["finetune_epochs"],
    )
    model = load(out / "finetune" / "model")
    dev = evaluate_model(
        model,
        read_classification_tsv(work / "dev.tsv", model.targets["classification"].labels),
        DEMO["finetune_seq_length"],
    )
    plots = plot_run(out / "pretrain") + plot_run(out / "finetune")
    summary = {
        "sst2_dev_accuracy": round(dev["accuracy"], 4),
        "sst2_dev_macro_f1": round(dev["macro_f1"], 4),
        "pretrain_tokens_per_s": round(pre["tokens_per_s"], 1),
        "pretrain_steps": steps,
        "pretrain_final_loss": pre["final_loss"],
        "finetune_steps": fine["steps"],
        "precision": precision,
        "model": str(out / "finetune" / "model"),
        "runs": [str(out / "pretrain"), str(out / "finetune")],
        "plots": [str(p) for p in plots],
        "minutes": round((time.perf_counter() - start) / 60, 2),
    }
    print(
        f"\nSST-2 dev accuracy {summary['sst2_dev_accuracy']:.4f} | pre-training "
        f"{summary['pretrain_tokens_per_s']:.0f} tokens/s | {summary['minutes']} min\n"
        f"model: {summary['model']}\nruns and metrics: {', '.join(summary['runs'])}\n"
        f"plots: {out / 'pretrain' / 'plots'}, {out / 'finetune' / 'plots'}"
    )
    return summary
