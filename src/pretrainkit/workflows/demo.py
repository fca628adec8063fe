"""The quickstart: SST-2 from the data mirror, from raw text to a dev accuracy in minutes."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pretrainkit.errors import ConfigError, DataError, PretrainkitError
from pretrainkit.paths import find_data_dir

log = logging.getLogger(__name__)

MARKER = ".pretrainkit-demo"


@dataclass
class DemoSettings:
    """What the demo trains; sized for 2 CPU cores and at most 10 minutes (BENCHMARKS.md)."""

    model: str = "bert-mini"
    # The demo's sentences are short: 128 positions suffice, and only the MLM target is trained.
    overrides: dict[str, Any] = field(
        default_factory=lambda: {"embedding.max_positions": 128, "targets": [{"name": "mlm"}]}
    )
    vocab_size: int = 8000
    seq_length: int = 128
    pretrain_steps: int = 450
    pretrain_batch: int = 32
    pretrain_lr: float = 1e-3
    finetune_epochs: float = 3.0
    finetune_batch: int = 32
    finetune_lr: float = 3e-4
    finetune_seq_length: int = 64
    # Mean pooling beat [CLS] by 1-1.5 points on SST-2 dev for this briefly pre-trained model
    # (RESULTS.md); [CLS] only becomes a sentence summary with longer pre-training.
    finetune_pooling: str = "mean"


def read_sst2(source: Path) -> list[tuple[str, str]]:
    """SST-2's ``label<TAB>sentence`` rows (no header), checked line by line."""
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
            rows.append((fields[0], fields[1]))
    if not rows:
        raise DataError("no rows", source)
    return rows


def write_task_files(rows: list[tuple[str, str]], tsv: Path, corpus: Path) -> None:
    """A task TSV with header, and the sentences as a corpus (one document each)."""
    with tsv.open("w", encoding="utf-8") as f:
        f.write("label\ttext_a\n")
        f.writelines(f"{label}\t{text}\n" for label, text in rows)
    # Each sentence is its own document: SST-2 sentences are independent snippets.
    with corpus.open("w", encoding="utf-8") as f:
        f.writelines(f"{text}\n\n" for _, text in rows)


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
    settings: DemoSettings | None = None,
) -> dict:
    """Run the quickstart into ``out`` and return its summary (also printed)."""
    from pretrainkit.data import preprocess
    from pretrainkit.tokenization import load_tokenizer, train_tokenizer
    from pretrainkit.training import TrainConfig
    from pretrainkit.training.plot import plot_run
    from pretrainkit.workflows.finetune import evaluate, finetune
    from pretrainkit.workflows.pretrain import pretrain

    demo = settings or DemoSettings()
    start = time.perf_counter()
    # Everything that can fail on the user's input is checked before the old run is replaced.
    data_dir = find_data_dir(data, required=("sst2/train.tsv", "sst2/dev.tsv"))
    train_rows = read_sst2(data_dir / "sst2/train.tsv")
    dev_rows = read_sst2(data_dir / "sst2/dev.tsv")
    if vocab is not None:
        load_tokenizer(vocab)
    steps = demo.pretrain_steps if pretrain_steps is None else pretrain_steps
    epochs = demo.finetune_epochs if finetune_epochs is None else finetune_epochs
    if epochs <= 0:
        raise ConfigError(f"finetune epochs must be positive, got {epochs}")
    pretrain_config = TrainConfig(
        steps=steps,
        lr=demo.pretrain_lr,
        warmup=steps // 10,
        scheduler="linear",
        precision=precision,
        log_every=20,
        save_every=0,
        eval_every=max(1, steps // 4),
    )
    finetune_config = TrainConfig(
        steps=1,  # set from the epochs once the data is read
        lr=demo.finetune_lr,
        warmup=0,
        scheduler="linear",
        precision=precision,
        log_every=20,
        save_every=0,
        eval_every=200,
    )

    out = Path(out)
    _fresh_folder(out)
    work = out / "data"
    work.mkdir()
    write_task_files(train_rows, work / "train.tsv", work / "corpus.txt")
    write_task_files(dev_rows, work / "dev.tsv", work / "dev_corpus.txt")
    log.info("SST-2: %d train, %d dev sentences from %s", len(train_rows), len(dev_rows), data_dir)
    if vocab is None:
        vocab = str(out / "tokenizer")
        train_tokenizer([work / "corpus.txt"], "wordpiece", demo.vocab_size, vocab)
    preprocess([work / "corpus.txt"], vocab, "mlm", demo.seq_length, out / "shards", workers=2)
    # Held-out MLM loss on the dev sentences, for the pre-training curve only.
    preprocess([work / "dev_corpus.txt"], vocab, "mlm", demo.seq_length, out / "dev_shards")

    pre = pretrain(
        demo.model,
        out / "shards",
        out / "pretrain",
        pretrain_config,
        batch_size=demo.pretrain_batch,
        overrides=demo.overrides,
        dev=out / "dev_shards",
        eval_batches=5,
    )
    fine = finetune(
        "classification",
        out / "pretrain" / "model",
        work / "train.tsv",
        work / "dev.tsv",
        out / "finetune",
        finetune_config,
        batch_size=demo.finetune_batch,
        epochs=epochs,
        task_options={"seq_length": demo.finetune_seq_length, "pooling": demo.finetune_pooling},
    )
    dev = evaluate(out / "finetune" / "model", work / "dev.tsv")
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
