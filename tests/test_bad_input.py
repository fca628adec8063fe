"""Bad and hostile input to every command, one row per case (issue: nothing lost, nothing
executed).

Each row runs ``pretrainkit ARGV`` in this process and checks the exit code, a regex the
message must match, that no traceback was printed, and that the output location holds exactly
what it held before (file names and bytes), with no ``.tmp-`` / ``.old-`` leftovers. Disk full
runs in a subprocess under ``RLIMIT_FSIZE`` (writes fail with EFBIG, as they would with
ENOSPC); a read-only location is an ``OSError(EROFS)`` injected at the file system calls;
neither needs root.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import logging
import os
import re
import resource
import signal
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from helpers import (
    MLM_ONLY,
    QUIET,
    TINY_MODEL,
    OneThread,
    cli,
    invoke,
    subprocess_env,
    write_classification,
    write_corpus,
)

import pretrainkit

GPT2 = {
    "hidden_size": 64,
    "encoder.num_layers": 2,
    "encoder.num_heads": 2,
    "encoder.ffn_size": 128,
    "embedding.max_positions": 64,
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with OneThread():
        yield


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """What the commands read: a corpus, vocabulary, shards, a pre-trained and a fine-tuned
    tiny BERT, its HF export, a tiny GPT-2 and small task files."""
    root = tmp_path_factory.mktemp("bad-input")
    corpus = write_corpus(root / "corpus.txt", documents=80, seed=0, reviews=True)
    tokenizer, shards = root / "tokenizer", root / "shards"
    cli("vocab", "--corpus", corpus, "--kind", "wordpiece", "--size", 300, "--out", tokenizer)
    cli(
        "preprocess", "--corpus", corpus, "--tokenizer", tokenizer, "--objective", "mlm",
        "--seq-length", 32, "--out", shards,
    )  # fmt: skip
    cli(
        "pretrain", *TINY_MODEL, *MLM_ONLY, "--data", shards, "--out", root / "run", "--steps",
        2, "--batch-size", 4, *QUIET,
    )  # fmt: skip
    train = root / "train.tsv"
    write_classification(train, 40, seed=1)
    cli(
        "finetune", "--model", root / "run" / "model", "--train", train, "--out",
        root / "clf-run", "--steps", 2, "--batch-size", 8, "--seq-length", 32, *QUIET,
    )  # fmt: skip
    cli("convert", "--to-hf", root / "run" / "model", "--out", root / "hf")
    gpt = pretrainkit.build_model("gpt2-small", {**GPT2, "vocab_size": 300})
    gpt.tokenizer = pretrainkit.load(root / "run" / "model").tokenizer
    gpt.save(root / "gpt")
    prompts = root / "prompts.txt"
    prompts.write_text("the big horse\nthe red fox\n", encoding="utf-8")
    return {
        "root": root,
        "corpus": corpus,
        "tokenizer": tokenizer,
        "shards": shards,
        "run": root / "run",
        "model": root / "run" / "model",
        "train": train,
        "clf": root / "clf-run" / "model",
        "hf": root / "hf",
        "gpt": root / "gpt",
        "prompts": prompts,
    }


# -- how a row damages or prepares its inputs ------------------------------------------------


def _copy_tree(source: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(source, target)
    return target


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _random_bytes(path: Path) -> None:
    path.write_bytes(os.urandom(4096))


def _absurd_header(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(struct.pack("<Q", 10**15) + data[8:])


DAMAGES = {"truncated": _truncate, "random-bytes": _random_bytes, "absurd-header": _absurd_header}


def _damaged_copy(kind: str, weights: str) -> Callable[[dict, Path], Path]:
    def prepare(w: dict, tmp: Path) -> Path:
        folder = _copy_tree(w[kind], tmp / f"damaged-{kind}")
        DAMAGES[weights](folder / "model.safetensors")
        return folder

    return prepare


def _existing_folder(w: dict, tmp: Path) -> Path:
    out = tmp / "out"
    out.mkdir()
    (out / "notes.txt").write_text("the user's own file\n")
    return out


def _existing_file(w: dict, tmp: Path) -> Path:
    out = tmp / "out.txt"
    out.write_text("the user's own file\n")
    return out


def _a_folder(w: dict, tmp: Path) -> Path:
    out = tmp / "out"
    out.mkdir()
    return out


def _metrics(content: bytes) -> Callable[[dict, Path], Path]:
    def prepare(w: dict, tmp: Path) -> Path:
        run = tmp / "run"
        run.mkdir()
        (run / "metrics.jsonl").write_bytes(content)
        return run

    return prepare


def _empty_prompts(w: dict, tmp: Path) -> Path:
    path = tmp / "empty.txt"
    path.write_text("")
    return path


def _headerless(w: dict, tmp: Path) -> Path:
    path = tmp / "headerless.tsv"
    lines = w["train"].read_text(encoding="utf-8").splitlines()[1:]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _escaping_index(w: dict, tmp: Path) -> Path:
    folder = _copy_tree(w["hf"], tmp / "hf-index")
    outside = tmp / "outside"
    outside.mkdir()
    (folder / "model.safetensors").rename(outside / "x.safetensors")
    from safetensors import safe_open

    with safe_open(str(outside / "x.safetensors"), "pt") as f:
        keys = list(f.keys())
    index = {"weight_map": dict.fromkeys(keys, "../outside/x.safetensors")}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return folder


@dataclass
class Case:
    """One command and what it must do."""

    id: str
    argv: list[str]
    code: int
    message: str
    prepare: dict[str, Callable[[dict, Path], Path]] = field(default_factory=dict)
    """Placeholders made per case: name -> function(world, tmp_path) returning a path."""
    watch: str | None = None
    """A placeholder or world key whose location must hold exactly what it held before."""
    readonly: str | None = None
    """A placeholder under which every write fails with EROFS."""


# {name} is a world path or a prepared path; {tmp} is the case's own folder.
CASES = [
    # 1. Nothing replaced without --overwrite.
    Case(
        "convert-to-hf-into-nonempty-folder",
        ["convert", "--to-hf", "{model}", "--out", "{out}"],
        2,
        r"out: the output folder exists.*--overwrite",
        {"out": _existing_folder},
        watch="out",
    ),
    Case(
        "convert-from-hf-over-a-file",
        ["convert", "--from-hf", "{hf}", "--out", "{out}"],
        2,
        r"out\.txt: exists and is not a folder",
        {"out": _existing_file},
        watch="out",
    ),
    Case(
        "predict-over-a-file",
        ["predict", "--model", "{clf}", "--data", "{train}", "--out", "{out}"],
        2,
        r"out\.txt: the output file exists.*--overwrite",
        {"out": _existing_file},
        watch="out",
    ),
    Case(
        "predict-into-a-folder",
        ["predict", "--model", "{clf}", "--data", "{train}", "--out", "{out}"],
        2,
        r"out: is a folder; give a file path",
        {"out": _a_folder},
        watch="out",
    ),
    Case(
        "embed-over-a-file",
        ["embed", "--model", "{model}", "--data", "{prompts}", "--out", "{out}"],
        2,
        r"out\.txt: the output file exists.*--overwrite",
        {"out": _existing_file},
        watch="out",
    ),
    Case(
        "embed-into-a-folder",
        ["embed", "--model", "{model}", "--data", "{prompts}", "--out", "{out}"],
        2,
        r"out: is a folder; give a file path",
        {"out": _a_folder},
        watch="out",
    ),
    Case(
        "generate-over-a-file",
        ["generate", "--model", "{gpt}", "--data", "{prompts}", "--out", "{out}"],
        2,
        r"out\.txt: the output file exists.*--overwrite",
        {"out": _existing_file},
        watch="out",
    ),
    Case(
        "pretrain-into-a-file",
        [
            "pretrain",
            *TINY_MODEL,
            *MLM_ONLY,
            "--data",
            "{shards}",
            "--out",
            "{out}",
            "--steps",
            "2",
            "--batch-size",
            "4",
            *QUIET,
        ],
        2,
        r"out\.txt: exists and is not a folder",
        {"out": _existing_file},
        watch="out",
    ),  # fmt: skip
    Case(
        "pretrain-into-an-earlier-run",
        [
            "pretrain",
            *TINY_MODEL,
            *MLM_ONLY,
            "--data",
            "{shards}",
            "--out",
            "{run}",
            "--steps",
            "2",
            "--batch-size",
            "4",
            *QUIET,
        ],
        2,
        r"run: the run folder exists; pass --resume to continue it, --overwrite",
        watch="run",
    ),  # fmt: skip
    Case(
        "finetune-into-a-user-folder",
        [
            "finetune",
            "--model",
            "{model}",
            "--train",
            "{train}",
            "--out",
            "{out}",
            "--steps",
            "2",
            *QUIET,
        ],
        2,
        r"out: the run folder exists",
        {"out": _existing_folder},
        watch="out",
    ),  # fmt: skip
    Case(
        "preprocess-into-a-user-folder",
        [
            "preprocess",
            "--corpus",
            "{corpus}",
            "--tokenizer",
            "{tokenizer}",
            "--objective",
            "mlm",
            "--seq-length",
            "32",
            "--out",
            "{out}",
        ],
        2,
        r"out: the output folder exists.*--overwrite",
        {"out": _existing_folder},
        watch="out",
    ),  # fmt: skip
    Case(
        "vocab-into-a-user-folder",
        ["vocab", "--corpus", "{corpus}", "--kind", "wordpiece", "--size", "300", "--out", "{out}"],
        2,
        r"out: the output folder exists.*--overwrite",
        {"out": _existing_folder},
        watch="out",
    ),  # fmt: skip
    # 2. OS errors: one line naming the path.
    Case(
        "pretrain-read-only",
        [
            "pretrain",
            *TINY_MODEL,
            *MLM_ONLY,
            "--data",
            "{shards}",
            "--out",
            "{ro}/run",
            "--steps",
            "2",
            "--batch-size",
            "4",
            *QUIET,
        ],
        2,
        r"out/run: Read-only file system \(EROFS\)",
        {"ro": _a_folder},
        watch="ro",
        readonly="ro",
    ),  # fmt: skip
    Case(
        "preprocess-read-only",
        [
            "preprocess",
            "--corpus",
            "{corpus}",
            "--tokenizer",
            "{tokenizer}",
            "--objective",
            "mlm",
            "--seq-length",
            "32",
            "--out",
            "{ro}/shards",
        ],
        2,
        r"out/shards: Read-only file system \(EROFS\)",
        {"ro": _a_folder},
        watch="ro",
        readonly="ro",
    ),  # fmt: skip
    Case(
        "embed-read-only",
        ["embed", "--model", "{model}", "--data", "{prompts}", "--out", "{ro}/e.npy"],
        2,
        r"out/e\.npy: Read-only file system \(EROFS\)",
        {"ro": _a_folder},
        watch="ro",
        readonly="ro",
    ),
    *[
        Case(
            f"finetune-{damage}-safetensors",
            [
                "finetune",
                "--model",
                "{bad}",
                "--train",
                "{train}",
                "--out",
                "{tmp}/run",
                "--steps",
                "2",
                *QUIET,
            ],
            2,
            r"model\.safetensors: not a valid safetensors file",
            {"bad": _damaged_copy("model", damage)},
            watch="tmp",
        )  # fmt: skip
        for damage in DAMAGES
    ],
    *[
        Case(
            f"convert-to-hf-{damage}-safetensors",
            ["convert", "--to-hf", "{bad}", "--out", "{tmp}/hf"],
            2,
            r"model\.safetensors: not a valid safetensors file",
            {"bad": _damaged_copy("model", damage)},
            watch="tmp",
        )
        for damage in DAMAGES
    ],
    *[
        Case(
            f"convert-from-hf-{damage}-safetensors",
            ["convert", "--from-hf", "{bad}", "--out", "{tmp}/pk"],
            2,
            r"model\.safetensors: .*(truncated|damaged|not a valid)",
            {"bad": _damaged_copy("hf", damage)},
            watch="tmp",
        )
        for damage in DAMAGES
    ],
    Case(
        "plot-garbage-metrics",
        ["plot", "{bad}"],
        2,
        r"metrics\.jsonl:1: not JSON",
        {"bad": _metrics(b'garbage\n{"step": 1, "loss": 2.0}\n')},
        watch="bad",
    ),
    Case(
        "plot-non-utf8-metrics",
        ["plot", "{bad}"],
        2,
        r"metrics\.jsonl:1: not UTF-8",
        {"bad": _metrics(b'\xff\xfe\x00garbage\n{"step": 1, "loss": 2.0}\n')},
        watch="bad",
    ),
    # 6. Paths written in files stay inside their folder.
    Case(
        "convert-index-pointing-outside",
        ["convert", "--from-hf", "{bad}", "--out", "{tmp}/pk"],
        2,
        r"model\.safetensors\.index\.json: the path '\.\./outside/x\.safetensors' .* outside",
        {"bad": _escaping_index},
        watch="tmp",
    ),
    # 7. Smaller ones.
    Case(
        "generate-empty-prompts",
        ["generate", "--model", "{gpt}", "--data", "{empty}", "--out", "{tmp}/o.txt"],
        2,
        r"empty\.txt: no prompts",
        {"empty": _empty_prompts},
        watch="tmp",
    ),
    Case(
        "negative-model-override",
        [
            "pretrain",
            *TINY_MODEL[:2],
            "--model.hidden_size",
            "-64",
            "--data",
            "{shards}",
            "--out",
            "{tmp}/run",
            "--steps",
            "2",
            *QUIET,
        ],
        2,
        r"hidden_size",
        watch="tmp",
    ),  # fmt: skip
    Case(
        "finetune-warmup-longer-than-epochs-steps",
        [
            "finetune",
            "--model",
            "{model}",
            "--train",
            "{train}",
            "--out",
            "{tmp}/run",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--warmup",
            "30",
            *QUIET,
        ],
        2,
        r"warmup \(30\) is longer than steps \(5\)",
        watch="tmp",
    ),  # fmt: skip
    Case(
        "convert-from-a-hub-name",
        ["convert", "--from-hf", "gpt2", "--out", "{tmp}/pk"],
        2,
        r"gpt2: no such folder.*no model hub",
        watch="tmp",
    ),
    # What already worked, kept working.
    Case(
        "unknown-command-option",
        ["predict", "--model", "{clf}", "--data", "{train}", "--out", "{tmp}/p", "--modle", "x"],
        2,
        r"unrecognised option --modle \(did you mean '--model'\?\)",
        watch="tmp",
    ),
    Case(
        "unknown-preset",
        [
            "pretrain",
            "--model",
            "bert-tinyy",
            "--data",
            "{shards}",
            "--out",
            "{tmp}/run",
            "--steps",
            "1",
        ],
        2,
        r"bert-tiny",
        watch="tmp",
    ),  # fmt: skip
    Case(
        "unknown-model-key",
        [
            "pretrain",
            *TINY_MODEL,
            "--model.hiden_size",
            "64",
            "--data",
            "{shards}",
            "--out",
            "{tmp}/run",
            "--steps",
            "1",
            *QUIET,
        ],
        2,
        r"hiden_size.*hidden_size",
        watch="tmp",
    ),  # fmt: skip
    Case(
        "zero-steps",
        ["pretrain", *TINY_MODEL, "--data", "{shards}", "--out", "{tmp}/run", "--steps", "0"],
        2,
        r"steps must be a positive integer",
        watch="tmp",
    ),
    Case(
        "eval-every-without-dev",
        [
            "pretrain",
            *TINY_MODEL,
            *MLM_ONLY,
            "--data",
            "{shards}",
            "--out",
            "{tmp}/run",
            "--steps",
            "2",
            "--eval-every",
            "1",
        ],
        2,
        r"--eval-every needs held-out shards",
        watch="tmp",
    ),  # fmt: skip
    Case(
        "objective-target-mismatch",
        [
            "pretrain",
            *TINY_MODEL,
            "--model.targets",
            "[{name: lm}]",
            "--data",
            "{shards}",
            "--out",
            "{tmp}/run",
            "--steps",
            "2",
        ],
        2,
        r"preprocessed for objective 'mlm'",
        watch="tmp",
    ),  # fmt: skip
    Case(
        "shards-not-a-shard-folder",
        ["pretrain", *TINY_MODEL, "--data", "{tmp}", "--out", "{tmp}/run", "--steps", "2"],
        2,
        r"manifest",
        watch="tmp",
    ),
    Case(
        "missing-corpus",
        [
            "preprocess",
            "--corpus",
            "{tmp}/nope.txt",
            "--tokenizer",
            "{tokenizer}",
            "--objective",
            "mlm",
            "--seq-length",
            "32",
            "--out",
            "{tmp}/s",
        ],
        2,
        r"nope\.txt: corpus file not found",
        watch="tmp",
    ),  # fmt: skip
    Case(
        "too-short-seq-length",
        [
            "preprocess",
            "--corpus",
            "{corpus}",
            "--tokenizer",
            "{tokenizer}",
            "--objective",
            "bert",
            "--seq-length",
            "3",
            "--out",
            "{tmp}/s",
        ],
        2,
        r"seq_length 3 is too short for bert",
        watch="tmp",
    ),  # fmt: skip
    Case(
        "vocab-too-small",
        ["vocab", "--corpus", "{corpus}", "--kind", "bpe", "--size", "10", "--out", "{tmp}/v"],
        2,
        r"vocab_size 10 is too small",
        watch="tmp",
    ),
    Case(
        "not-a-model-folder",
        ["finetune", "--model", "{tmp}", "--train", "{train}", "--out", "{tmp}/run"],
        2,
        r"not a model folder \(no config\.yaml\)",
        watch="tmp",
    ),
    Case(
        "missing-train-file",
        [
            "finetune",
            "--model",
            "{model}",
            "--train",
            "{tmp}/none.tsv",
            "--out",
            "{tmp}/run",
            "--steps",
            "1",
            *QUIET,
        ],
        2,
        r"none\.tsv",
        watch="tmp",
    ),  # fmt: skip
    Case(
        "evaluate-without-classifier",
        ["evaluate", "--model", "{model}", "--data", "{train}"],
        2,
        r"run/model: not a fine-tuned model \(no task\.json; targets: \['mlm'\]\)",
    ),
    Case(
        "config-file-unknown-key",
        [
            "pretrain",
            "--config",
            "{config}",
            *TINY_MODEL,
            "--data",
            "{shards}",
            "--out",
            "{tmp}/run",
        ],
        2,
        r"unknown option 'stepz'.*steps",
        {"config": lambda w, t: _write(t / "c.yaml", "stepz: 3\n")},
        watch="tmp",
    ),  # fmt: skip
    Case(
        "config-file-not-yaml",
        [
            "pretrain",
            "--config",
            "{config}",
            *TINY_MODEL,
            "--data",
            "{shards}",
            "--out",
            "{tmp}/run",
        ],
        2,
        r"c\.yaml: not valid YAML",
        {"config": lambda w, t: _write(t / "c.yaml", "steps: [1,\n")},
        watch="tmp",
    ),  # fmt: skip
    Case(
        "generate-not-generative",
        ["generate", "--model", "{clf}", "--prompt", "the"],
        2,
        r"(causal|generat)",
    ),
    Case(
        "threads-zero",
        [
            "embed",
            "--model",
            "{model}",
            "--data",
            "{prompts}",
            "--out",
            "{tmp}/e.npy",
            "--threads",
            "0",
        ],
        2,
        r"--threads must be >= 1",
        watch="tmp",
    ),  # fmt: skip
    Case(
        "vocab-unknown-kind",
        ["vocab", "--corpus", "{corpus}", "--kind", "bpe2", "--size", "300", "--out", "{tmp}/v"],
        2,
        r"argument --kind: invalid choice: 'bpe2'",
        watch="tmp",
    ),
    Case(
        "preprocess-missing-tokenizer",
        [
            "preprocess",
            "--corpus",
            "{corpus}",
            "--tokenizer",
            "{tmp}/nope",
            "--objective",
            "mlm",
            "--seq-length",
            "32",
            "--out",
            "{tmp}/s",
        ],
        2,
        r"nope: tokenizer file or folder not found",
        watch="tmp",
    ),  # fmt: skip
    Case(
        "preprocess-zero-workers",
        [
            "preprocess",
            "--corpus",
            "{corpus}",
            "--tokenizer",
            "{tokenizer}",
            "--objective",
            "mlm",
            "--seq-length",
            "32",
            "--out",
            "{tmp}/s",
            "--workers",
            "0",
        ],
        2,
        r"workers must be at least 1",
        watch="tmp",
    ),  # fmt: skip
    Case(
        "fp16-on-cpu",
        [
            "pretrain",
            *TINY_MODEL,
            "--data",
            "{shards}",
            "--out",
            "{tmp}/run",
            "--steps",
            "2",
            "--precision",
            "fp16",
            "--device",
            "cpu",
        ],
        2,
        r"precision 'fp16' needs a CUDA GPU",
        watch="tmp",
    ),  # fmt: skip
    Case(
        "unknown-strategy",
        [
            "pretrain",
            *TINY_MODEL,
            "--data",
            "{shards}",
            "--out",
            "{tmp}/run",
            "--steps",
            "2",
            "--strategy",
            "ring",
        ],
        2,
        r"unknown strategy 'ring'.*valid choices: single, ddp, fsdp, deepspeed",
        watch="tmp",
    ),  # fmt: skip
    Case(
        "zero-stage-without-deepspeed",
        [
            "pretrain",
            *TINY_MODEL,
            "--data",
            "{shards}",
            "--out",
            "{tmp}/run",
            "--steps",
            "2",
            "--zero-stage",
            "2",
        ],
        2,
        r"zero_stage=2 applies to strategy 'deepspeed' only",
        watch="tmp",
    ),  # fmt: skip
    Case(
        "negative-lr",
        [
            "pretrain",
            *TINY_MODEL,
            "--data",
            "{shards}",
            "--out",
            "{tmp}/run",
            "--steps",
            "2",
            "--lr",
            "-1",
        ],
        2,
        r"lr must be a positive finite number, got -1\.0",
        watch="tmp",
    ),  # fmt: skip
    Case(
        "misspelt-scheduler",
        [
            "pretrain",
            *TINY_MODEL,
            "--data",
            "{shards}",
            "--out",
            "{tmp}/run",
            "--steps",
            "2",
            "--scheduler",
            "cosin",
        ],
        2,
        r"unknown scheduler 'cosin' \(did you mean 'cosine'\?\)",
        watch="tmp",
    ),  # fmt: skip
    Case(
        "embed-missing-model",
        ["embed", "--model", "{tmp}/nope", "--data", "{prompts}", "--out", "{tmp}/e.npy"],
        2,
        r"nope: no such model folder",
        watch="tmp",
    ),
    Case(
        "generate-top-p-above-one",
        ["generate", "--model", "{gpt}", "--prompt", "the", "--strategy", "sample", "--top-p", "2"],
        2,
        r"top_p",
    ),  # fmt: skip
    Case(
        "quantize-negative-tolerance",
        [
            "quantize",
            "--model",
            "{clf}",
            "--calib",
            "{train}",
            "--select",
            "{train}",
            "--out",
            "{tmp}/q",
            "--tolerance",
            "-1",
        ],
        2,
        r"tolerance",
        watch="tmp",
    ),  # fmt: skip
    Case(
        "quantize-into-a-user-folder",
        [
            "quantize",
            "--model",
            "{clf}",
            "--calib",
            "{train}",
            "--select",
            "{train}",
            "--out",
            "{out}",
        ],
        2,
        r"out: the output folder exists.*--overwrite",
        {"out": _existing_folder},
        watch="out",
    ),  # fmt: skip
    Case(
        "bench-missing-model",
        ["bench", "--model", "{tmp}/nope"],
        2,
        r"nope: no such model folder",
        watch="tmp",
    ),
    Case(
        "predict-missing-data",
        ["predict", "--model", "{clf}", "--data", "{tmp}/none.tsv", "--out", "{tmp}/p.tsv"],
        2,
        r"none\.tsv",
        watch="tmp",
    ),
    Case(
        "columns-with-a-header-line",
        ["evaluate", "--model", "{clf}", "--data", "{train}", "--columns", "label,text_a"],
        2,
        r"train\.tsv:1: line 1 is a header",
    ),
    Case(
        "plot-missing-run",
        ["plot", "{tmp}/nothing"],
        2,
        r"metrics\.jsonl: not found",
    ),
    Case(
        "embed-missing-data",
        ["embed", "--model", "{model}", "--data", "{tmp}/none.txt", "--out", "{tmp}/e.npy"],
        2,
        r"none\.txt: file not found",
        watch="tmp",
    ),
    Case(
        "predict-wrong-label",
        ["predict", "--model", "{clf}", "--data", "{bad}", "--out", "{tmp}/p.tsv"],
        2,
        r"bad\.tsv:2: .*label",
        {"bad": lambda w, t: _write(t / "bad.tsv", "label\ttext_a\nmaybe\tthe fox .\n")},
        watch="tmp",
    ),
]


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _snapshot(path: Path) -> dict[str, bytes | None]:
    """Every file below ``path`` (or the file itself) with its bytes; folders as None."""
    if not path.exists():
        return {}
    if path.is_file():
        return {".": path.read_bytes()}
    return {
        str(p.relative_to(path)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(path.rglob("*"))
    }


def _leftovers(path: Path) -> list[str]:
    root = path if path.is_dir() else path.parent
    return [p.name for p in root.rglob(".*") if re.match(r"^\.(tmp|old)-", p.name)]


@pytest.fixture
def read_only(monkeypatch: pytest.MonkeyPatch):
    """Make writes below a folder fail with EROFS, as on a read-only mount."""

    def install(folder: Path) -> None:
        prefix = os.path.abspath(folder) + os.sep

        def blocked(path: object) -> bool:
            return os.path.abspath(os.fspath(path)).startswith(prefix)  # type: ignore[arg-type]

        def deny(path: object) -> OSError:
            return OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))  # type: ignore[arg-type]

        real_mkdir, real_open = os.mkdir, builtins.open

        def mkdir(path, *args, **kwargs):
            if blocked(path):
                raise deny(path)
            return real_mkdir(path, *args, **kwargs)

        def open_(path, mode="r", *args, **kwargs):
            if isinstance(path, (str, os.PathLike)) and set(mode) & set("wax+") and blocked(path):
                raise deny(path)
            return real_open(path, mode, *args, **kwargs)

        monkeypatch.setattr(os, "mkdir", mkdir)
        monkeypatch.setattr(builtins, "open", open_)
        monkeypatch.setattr(io, "open", open_)

    return install


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, world: dict, tmp_path: Path, capsys, read_only) -> None:
    paths: dict[str, Path] = {**world, "tmp": tmp_path}
    for name, prepare in case.prepare.items():
        paths[name] = prepare(world, tmp_path)
    argv = [re.sub(r"\{(\w+)\}", lambda m: str(paths[m.group(1)]), arg) for arg in case.argv]
    watched = paths[case.watch] if case.watch else None
    before = _snapshot(watched) if watched else {}
    if case.readonly:
        read_only(paths[case.readonly])
    code, out, err = invoke(capsys, *argv)
    assert "Traceback" not in err, err
    assert code == case.code, f"exit {code}, expected {case.code}\n{err}"
    message = [line for line in err.splitlines() if line.startswith("pretrainkit ")]
    assert message, err
    assert re.search(case.message, message[-1]), message[-1]
    if watched is not None:
        assert _snapshot(watched) == before
        assert _leftovers(watched) == []


# -- --overwrite does replace, and only what it names ------------------------------------


def test_overwrite_replaces_the_output(world: dict, tmp_path: Path, capsys) -> None:
    out = _existing_file(world, tmp_path)
    argv = ["predict", "--model", world["clf"], "--data", world["train"], "--out", out]
    assert invoke(capsys, *argv)[0] == 2
    code, _, err = invoke(capsys, *argv, "--overwrite")
    assert code == 0, err
    assert out.read_text().splitlines()[0] == "label\tprobability"
    folder = _existing_folder(world, tmp_path)
    code, _, err = invoke(
        capsys, "convert", "--to-hf", world["model"], "--out", folder, "--overwrite"
    )
    assert code == 0, err
    assert not (folder / "notes.txt").exists() and (folder / "config.json").is_file()
    assert _leftovers(tmp_path) == []


def test_overwrite_of_a_run_keeps_the_old_one_until_the_new_one_succeeds(
    world: dict, tmp_path: Path, capsys
) -> None:
    run = _existing_folder(world, tmp_path)
    base = ["pretrain", *TINY_MODEL, *MLM_ONLY, "--data", world["shards"], "--out", run, *QUIET]
    # A failing replacement (bad option value found late) leaves the old folder as it was.
    code, _, err = invoke(capsys, *base, "--steps", "2", "--overwrite", "--dev", tmp_path / "x")
    assert code == 2, err
    assert (run / "notes.txt").is_file()
    code, _, err = invoke(capsys, *base, "--steps", "2", "--overwrite")
    assert code == 0, err
    assert not (run / "notes.txt").exists() and (run / "model" / "config.yaml").is_file()
    assert _leftovers(tmp_path) == []


def test_run_folder_given_as_model_uses_its_model(
    world: dict, tmp_path: Path, capsys, caplog
) -> None:
    with caplog.at_level(logging.INFO, logger="pretrainkit"):
        code, _, err = invoke(
            capsys, "finetune", "--model", world["run"], "--train", world["train"], "--out",
            tmp_path / "run", "--steps", "1", "--batch-size", "8", *QUIET,
        )  # fmt: skip
    assert code == 0, err
    said = f"{world['run']} is a run folder; loading its model from {world['run'] / 'model'}"
    assert said in [r.getMessage() for r in caplog.records]


def test_headerless_file_with_columns(world: dict, tmp_path: Path, capsys) -> None:
    headerless = _headerless(world, tmp_path)
    base = ["evaluate", "--model", world["clf"], "--data", headerless]
    code, out, err = invoke(capsys, *base, "--columns", "label,text_a")
    assert code == 0, err
    assert json.loads(out[out.index("{") :])["rows"] == 40
    code, _, err = invoke(capsys, *base, "--columns", "label,txt")
    assert code == 2 and "txt" in err


def test_negative_override_reaches_validation(world: dict, tmp_path: Path, capsys) -> None:
    code, _, err = invoke(
        capsys, "pretrain", *TINY_MODEL[:2], "--model.hidden_size=-64", "--data",
        world["shards"], "--out", tmp_path / "run", "--steps", "1",
    )  # fmt: skip
    assert code == 2 and "hidden_size" in err and "unrecognised" not in err


def test_debug_shows_the_traceback(world: dict, tmp_path: Path, capsys) -> None:
    with pytest.raises(pretrainkit.errors.PretrainkitError):
        pretrainkit.cli.main.main(["--debug", "plot", str(tmp_path / "nothing")])


# -- disk full and Ctrl-C, in a subprocess -------------------------------------------------


def _limited(limit: int) -> Callable[[], None]:
    def apply() -> None:
        # Writes past the limit fail with EFBIG instead of killing the process (SIGXFSZ).
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


DISK_FULL = [
    ("pretrain", ["pretrain", *TINY_MODEL, *MLM_ONLY, "--data", "{shards}", "--out",
                  "{tmp}/out/run", "--steps", "2", "--batch-size", "4", *QUIET], 20_000),
    ("preprocess", ["preprocess", "--corpus", "{corpus}", "--tokenizer", "{tokenizer}",
                    "--objective", "mlm", "--seq-length", "32", "--out", "{tmp}/out/s"], 2_000),
    ("predict", ["predict", "--model", "{clf}", "--data", "{train}", "--out",
                 "{tmp}/out/p.tsv"], 100),
    ("embed", ["embed", "--model", "{model}", "--data", "{train}", "--out",
               "{tmp}/out/e.npy"], 1_000),
]  # fmt: skip


@pytest.mark.parametrize("name,argv,limit", DISK_FULL, ids=[c[0] for c in DISK_FULL])
def test_disk_full(name: str, argv: list[str], limit: int, world: dict, tmp_path: Path) -> None:
    paths = {**world, "tmp": tmp_path}
    argv = [re.sub(r"\{(\w+)\}", lambda m: str(paths[m.group(1)]), arg) for arg in argv]
    (tmp_path / "out").mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "pretrainkit", *argv],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        preexec_fn=_limited(limit),
        timeout=300,
    )
    lines = [line for line in done.stderr.splitlines() if line.startswith("pretrainkit ")]
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    # The path the user gave, not a temporary one inside it.
    assert re.search(r"cannot write \S+/out/\S+: .*(File too large \(EFBIG\)|disk)", lines[-1])
    assert ".tmp-" not in lines[-1], lines
    assert list((tmp_path / "out").iterdir()) == []  # nothing half-written, no temporaries


def test_ctrl_c_during_preprocess_exits_130_and_cleans_up(world: dict, tmp_path: Path) -> None:
    corpus = tmp_path / "big.txt"
    text = world["corpus"].read_text(encoding="utf-8")
    # Long enough that a loaded machine (CI shares its cores) cannot finish it between the
    # output's first appearance and the signal.
    corpus.write_text(text * 2000, encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "pretrainkit", "preprocess", "--corpus", str(corpus),
         "--tokenizer", str(world["tokenizer"]), "--objective", "mlm", "--seq-length", "32",
         "--out", str(out / "shards"), "--workers", "2"],
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
        start_new_session=True,
        # A test run started in the background of a shell inherits an ignored SIGINT.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    import time

    deadline = time.monotonic() + 120
    while not any(out.iterdir()) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None, "preprocess ended before it could be interrupted"
    time.sleep(0.1)
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == "pretrainkit preprocess: interrupted"
    assert list(out.iterdir()) == []


def test_stale_temporaries_of_dead_processes_are_removed(world: dict, tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    stale = tmp_path / f".tmp-shards-{dead}"
    stale.mkdir()
    (stale / "tokens.bin").write_bytes(b"\0" * 10)
    live = tmp_path / f".tmp-shards-{os.getppid()}"  # a live process's: left alone
    live.mkdir()
    cli(
        "preprocess", "--corpus", world["corpus"], "--tokenizer", world["tokenizer"],
        "--objective", "mlm", "--seq-length", "32", "--out", tmp_path / "shards",
    )  # fmt: skip
    assert not stale.exists() and live.exists()
    assert (tmp_path / "shards" / "manifest.json").is_file()


def test_torch_threads_flag(world: dict, tmp_path: Path, capsys) -> None:
    before = torch.get_num_threads()
    try:
        code, _, err = invoke(
            capsys, "embed", "--model", world["model"], "--data", world["prompts"], "--out",
            tmp_path / "e.npy", "--threads", "1",
        )  # fmt: skip
        assert code == 0, err
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_help_and_logs_say_what_is_there(world: dict, tmp_path: Path, capsys, caplog) -> None:
    from pretrainkit.convert import FAMILIES

    with pytest.raises(SystemExit):
        pretrainkit.cli.main.main(["convert", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert len(FAMILIES.names()) == 11
    for family in FAMILIES.names():
        assert re.search(rf"[ ,:]{re.escape(family)}[,;]", help_text), family
    with caplog.at_level(logging.INFO):
        code, _, err = invoke(
            capsys, "pretrain", *TINY_MODEL, *MLM_ONLY, "--data", world["shards"], "--out",
            tmp_path / "run", "--steps", "1", "--batch-size", "4", *QUIET,
        )  # fmt: skip
    assert code == 0, err
    assert any("1 process(es), strategy single;" in r.getMessage() for r in caplog.records)


def test_a_busy_machine_is_warned_about_once(
    world: dict, tmp_path: Path, capsys, caplog, monkeypatch
) -> None:
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 9.0, 9.0))
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    argv = ["embed", "--model", world["model"], "--data", world["prompts"]]
    with caplog.at_level(logging.WARNING, logger="pretrainkit"):
        assert invoke(capsys, *argv, "--out", tmp_path / "a.npy")[0] == 0
    warnings = [r.getMessage() for r in caplog.records if "load average" in r.getMessage()]
    assert warnings == [
        "load average 9.0 exceeds the 2 CPU cores: timings and throughput will be unreliable; "
        "consider --threads 1"
    ]
    caplog.clear()
    before = torch.get_num_threads()
    try:
        with caplog.at_level(logging.WARNING, logger="pretrainkit"):
            assert invoke(capsys, *argv, "--out", tmp_path / "b.npy", "--threads", "1")[0] == 0
    finally:
        torch.set_num_threads(before)
    warnings = [r.getMessage() for r in caplog.records if "load average" in r.getMessage()]
    assert warnings == ["load average 9.0 exceeds the 2 CPU cores: timings and throughput will "
                        "be unreliable"]  # fmt: skip


def test_a_file_of_another_task_is_refused_with_a_hint(world: dict, tmp_path: Path, capsys) -> None:
    tagging = tmp_path / "ner.tsv"
    rows = [
        f"{' '.join('abcdefgh'[: 3 + i % 4])}\t{' '.join(['O'] * (3 + i % 4))}" for i in range(30)
    ]
    # msra_ner's layout: text_a first, one tag per word in the label column.
    tagging.write_text("text_a\tlabel\n" + "\n".join(rows) + "\n")
    code, _, err = invoke(
        capsys, "finetune", "--model", world["model"], "--train", tagging, "--out",
        tmp_path / "run", "--steps", "1", *QUIET,
    )  # fmt: skip
    assert code == 2 and "looks like a tagging file; use --task tagging" in err, err
    scores = tmp_path / "scores.tsv"
    scores.write_text("label\ttext_a\n" + "".join(f"{i / 7:.3f}\tthe fox .\n" for i in range(40)))
    code, _, err = invoke(
        capsys, "finetune", "--model", world["model"], "--train", scores, "--out",
        tmp_path / "run", "--steps", "1", *QUIET,
    )  # fmt: skip
    assert code == 2 and "40 distinct labels in 40 rows" in err and "--task regression" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ner.tsv", "scores.tsv"]


def test_init_writes_a_random_model_with_the_tokenizer(world: dict, tmp_path: Path, capsys) -> None:
    base = ["init", "--model", "bert-tiny", *TINY_MODEL[2:], *MLM_ONLY, "--tokenizer",
            world["tokenizer"]]  # fmt: skip
    assert invoke(capsys, *base, "--out", tmp_path / "a", "--seed", "3")[0] == 0
    assert invoke(capsys, *base, "--out", tmp_path / "b", "--seed", "3")[0] == 0
    a, b = pretrainkit.load(tmp_path / "a"), pretrainkit.load(tmp_path / "b")
    assert a.config.vocab_size == a.tokenizer.vocab_size == 146
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    code, _, err = invoke(capsys, *base, "--out", tmp_path / "a")
    assert code == 2 and "a: the output folder exists" in err
