"""The command line as a user meets it: help, presets, config precedence, errors, plots, demo."""

from __future__ import annotations

import json
import random
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import (
    MLM_ONLY,
    NEGATIVE,
    PNG_SIGNATURE,
    POSITIVE,
    QUIET,
    TINY_MODEL,
    OneThread,
    cli,
    invoke,
    last_json,
    read_metrics,
    sentence,
    subprocess_env,
    write_classification,
    write_corpus,
)
from safetensors.torch import load_file

COMMANDS = {
    "presets": "list the shipped model presets",
    "vocab": "train a WordPiece / byte-level BPE / unigram vocabulary on a corpus",
    "preprocess": "tokenize a corpus into token shards for pre-training",
    "pretrain": "pre-train a model on token shards",
    "finetune": "fine-tune a model folder on a downstream task",
    "evaluate": "score a fine-tuned model on a labelled file",
    "predict": "write predictions of a fine-tuned model for a file",
    "plot": "write PNG curves (loss, lr, tokens/s, dev metrics) of a run",
    "demo": "English quickstart: vocab → shards → pre-train → fine-tune → SST-2 dev",
}
PRESETS = [
    "albert-base",
    "bart-base",
    "bert-base",
    "bert-large",
    "bert-medium",
    "bert-mini",
    "bert-small",
    "bert-tiny",
    "gpt2-small",
    "llama",
    "pegasus-large",
    "roberta-base",
    "s2t-small",
    "t5-small",
    "t5-v1_1-base",
    "vit-base",
    "xlm-roberta-base",
]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with OneThread():
        yield


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A corpus with cue words, its vocabulary, MLM shards and a 2-step pre-trained model."""
    root = tmp_path_factory.mktemp("cli")
    corpus = write_corpus(root / "corpus.txt", documents=80, seed=0, reviews=True)
    tokenizer, shards = root / "tokenizer", root / "shards"
    cli("vocab", "--corpus", corpus, "--kind", "wordpiece", "--size", 300, "--out", tokenizer)
    cli(
        "preprocess", "--corpus", corpus, "--tokenizer", tokenizer, "--objective", "mlm",
        "--seq-length", 32, "--out", shards,
    )  # fmt: skip
    cli(
        "pretrain", *TINY_MODEL, *MLM_ONLY, "--data", shards, "--out", root / "run", "--steps",
        2, "--batch-size", 4, "--log-every", 1, *QUIET,
    )  # fmt: skip
    train = root / "train.tsv"
    write_classification(train, 40, seed=1)
    return {
        "root": root,
        "corpus": corpus,
        "tokenizer": tokenizer,
        "shards": shards,
        "model": root / "run" / "model",
        "train": train,
    }


def _squash(text: str) -> str:
    return " ".join(text.split())  # argparse wraps long help lines


# --- help and presets ---------------------------------------------------------------------------
def test_help_lists_every_command_with_its_summary(capsys) -> None:
    code, out, _ = invoke(capsys, "--help")
    assert code == 0
    listed = _squash(out.split("commands:", 1)[1])
    positions = []
    for name, summary in COMMANDS.items():
        assert f"{name} {summary}" in listed, name
        positions.append(listed.index(f"{name} {summary}"))
    assert positions == sorted(positions)  # in the README's order
    # No command at all prints the same help and succeeds.
    assert invoke(capsys)[:2] == (0, out)


def test_help_of_the_installed_entry_point() -> None:
    command = shutil.which("pretrainkit")
    argv = [command] if command else [sys.executable, "-m", "pretrainkit"]
    done = subprocess.run(
        [*argv, "--help"], capture_output=True, text=True, env=subprocess_env(), timeout=60
    )
    assert done.returncode == 0, done.stderr
    listed = _squash(done.stdout.split("commands:", 1)[1])
    for name, summary in COMMANDS.items():
        assert f"{name} {summary}" in listed, name


def test_a_task_option_shared_by_name_shows_each_tasks_description(capsys) -> None:
    """``--pooling`` means a classifier head's pooling for most tasks and the sentence
    embedding's for simcse: the help gives both, each with its tasks."""
    code, out, _ = invoke(capsys, "finetune", "--help")
    assert code == 0
    text = _squash(out.split("--pooling POOLING", 2)[2])
    assert text.startswith("classification, cross_encoder,")
    assert "| simcse: Sentence embedding of the simcse task" in text


def test_training_flags_come_from_train_config(capsys) -> None:
    code, out, _ = invoke(capsys, "pretrain", "--help")
    assert code == 0
    text = _squash(out)
    # Help text is the field's docstring, with its default.
    assert "--steps STEPS Number of optimizer steps" in text
    assert "--lr LR Peak learning rate, reached at the end of the warmup. (default: 0.0001)" in text
    assert "--progress | --no-progress" in text
    assert "--config CONFIG YAML file of option values (defaults < file < flags)" in text


def test_presets_prints_every_preset(capsys) -> None:
    code, out, _ = invoke(capsys, "presets")
    assert code == 0
    lines = out.strip().splitlines()
    assert [line.split()[0] for line in lines] == PRESETS
    summaries = dict(line.split(maxsplit=1) for line in lines)
    assert (
        summaries["bert-tiny"]
        == "BERT tiny (Turc et al. 2019): 2 layers, hidden 128, 2 heads; MLM + NSP"
    )
    assert "causal LM" in summaries["gpt2-small"]
    # Descriptions of two comment lines are printed whole, not cut after the first line.
    assert summaries["llama"].endswith("full multi-head attention (GQA came with 70B).")
    assert not any(text.rstrip().endswith((",", "(")) for text in summaries.values())
    assert all(len(summary) > 20 for summary in summaries.values())


# --- configuration ------------------------------------------------------------------------------
def test_config_file_then_flags(data: dict[str, Path], tmp_path: Path, capsys) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "lr": 0.01,
                "steps": 3,
                "log_every": 1,
                "batch_size": 4,
                "model_overrides": {"encoder.activation": "relu", "encoder.num_layers": 2},
            }
        )
    )
    run = tmp_path / "run"
    code, out, err = invoke(
        capsys, "pretrain", *TINY_MODEL, *MLM_ONLY, "--data", data["shards"], "--out", run,
        "--config", config, "--steps", 2, "--model.encoder.num_layers", 1, *QUIET,
    )  # fmt: skip
    assert code == 0, err
    assert last_json(out)["steps"] == 2  # the flag beats the file
    records = read_metrics(run)
    assert [r["step"] for r in records] == [1, 2]  # log_every from the file
    # lr from the file; warmup 0 and the linear decay over 2 steps are the defaults.
    assert [r["lr"] for r in records] == pytest.approx([0.01, 0.005])
    assert json.loads((run / "run.json").read_text())["batch_size"] == 4
    saved = yaml.safe_load((run / "model" / "config.yaml").read_text())
    assert saved["encoder"]["num_layers"] == 1  # the flag beats the file's model override
    assert saved["encoder"]["activation"] == "relu"  # the file beats the preset (gelu)
    assert saved["hidden_size"] == 64
    weights = load_file(run / "model" / "model.safetensors")
    assert not [name for name in weights if name.startswith("encoder.layers.1.")]
    assert weights["encoder.layers.0.feed_forward.up.weight"].shape == (128, 64)


def test_misspelt_option_in_config_file_is_rejected(
    data: dict[str, Path], tmp_path: Path, capsys
) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("lr: 0.01\nstpes: 3\n")
    run = tmp_path / "run"
    code, _, err = invoke(
        capsys, "pretrain", *TINY_MODEL, *MLM_ONLY, "--data", data["shards"], "--out", run,
        "--config", config, "--steps", 2, *QUIET,
    )  # fmt: skip
    assert code == 2
    assert "stpes" in err and "did you mean 'steps'" in err
    assert not run.exists()


def test_finetune_config_file_epochs_is_not_ignored(
    data: dict[str, Path], tmp_path: Path, capsys
) -> None:
    config = tmp_path / "finetune.yaml"
    config.write_text("epochs: 0.4\nbatch_size: 8\n")  # 0.4 * 40 rows / 8 = 2 steps
    code, out, err = invoke(
        capsys, "finetune", "--model", data["model"], "--train", data["train"], "--out",
        tmp_path / "run", "--config", config, "--seq-length", 32, *QUIET,
    )  # fmt: skip
    assert code == 0, err
    assert last_json(out)["steps"] == 2  # not 3 epochs, the default
    records = read_metrics(tmp_path / "run")
    assert [r["step"] for r in records][-1] == 2
    assert json.loads((tmp_path / "run" / "run.json").read_text())["batch_size"] == 8


def test_misspelt_flags_are_rejected(data: dict[str, Path], tmp_path: Path, capsys) -> None:
    common = [*TINY_MODEL, *MLM_ONLY, "--data", data["shards"], "--out", tmp_path / "run"]
    code, _, err = invoke(capsys, "pretrain", *common, "--stpes", 2, *QUIET)
    assert code == 2 and "--stpes (did you mean '--steps'?)" in err
    code, _, err = invoke(
        capsys, "pretrain", *common, "--steps", 2, "--model.encoder.num_layer", 1, *QUIET
    )
    assert code == 2
    assert "unknown key 'num_layer' (did you mean 'num_layers'?)" in err
    code, _, err = invoke(
        capsys, "finetune", "--model", data["model"], "--train", data["train"], "--out",
        tmp_path / "run", "--stpes", 2,
    )  # fmt: skip
    assert code == 2 and "--stpes (did you mean '--steps'?)" in err
    assert not (tmp_path / "run").exists()


# --- bad input ----------------------------------------------------------------------------------
def _write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


BAD_INPUTS = {
    # case: (command line with {placeholders}, files to write, expected text in the error)
    "tsv-wrong-field-count": (
        "finetune --model {model} --train {tmp}/train.tsv --out {out} --steps 1",
        {"train.tsv": "label\ttext_a\n1\tit was good\n0\tit was\tbad\n"},
        "train.tsv:3: expected 2 tab-separated fields (label, text_a), got 3",
    ),
    "dev-label-not-in-train": (
        "finetune --model {model} --train {train} --dev {tmp}/dev.tsv --out {out} --steps 1",
        {"dev.tsv": "label\ttext_a\n1\tit was good\n2\tit was bad\n"},
        "dev.tsv:3: label '2' is not one of the labels: 0, 1",
    ),
    "tsv-not-utf8": (
        "finetune --model {model} --train {tmp}/train.tsv --out {out} --steps 1",
        {"train.tsv": b"label\ttext_a\n1\tgood\n0\tna\xefve\xff\n"},
        "train.tsv:3: not UTF-8",
    ),
    "evaluate-label-not-in-model": (
        "evaluate --model {model} --data {tmp}/test.tsv",
        {"test.tsv": "label\ttext_a\n0\tit was bad\nmaybe\tit was\n"},
        "test.tsv:3: label 'maybe' is not one of the labels: 0, 1",
    ),
    "corpus-not-utf8": (
        "preprocess --corpus {tmp}/corpus.txt --tokenizer {tokenizer} --objective mlm "
        "--seq-length 32 --out {out}",
        {"corpus.txt": b"the old farmer sees the red fox .\n\nthe \xff\xfe owl .\n"},
        "corpus.txt:3: not UTF-8",
    ),
    "corpus-empty": (
        "preprocess --corpus {tmp}/corpus.txt --tokenizer {tokenizer} --objective mlm "
        "--seq-length 32 --out {out}",
        {"corpus.txt": "\n\n  \n"},
        "corpus.txt: corpus holds no tokens",
    ),
    "vocab-corpus-empty": (
        "vocab --corpus {tmp}/corpus.txt --kind wordpiece --size 100 --out {out}",
        {"corpus.txt": ""},
        "corpus.txt: corpus holds no text",
    ),
    "corpus-missing": (
        "preprocess --corpus {tmp}/missing.txt --tokenizer {tokenizer} --objective mlm "
        "--seq-length 32 --out {out}",
        {},
        "missing.txt: corpus file not found",
    ),
    "train-file-missing": (
        "finetune --model {model} --train {tmp}/missing.tsv --out {out} --steps 1",
        {},
        "missing.tsv: file not found",
    ),
    "vocab-txt-without-mask": (
        "preprocess --corpus {corpus} --tokenizer {tmp}/vocab.txt --objective mlm "
        "--seq-length 32 --out {out}",
        {"vocab.txt": "[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\nfox\n"},
        "vocab.txt: WordPiece vocabulary lacks the special tokens [MASK]",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_2_naming_file_and_line(
    case: str, data: dict[str, Path], tmp_path: Path, capsys
) -> None:
    template, files, expected = BAD_INPUTS[case]
    for name, content in files.items():
        _write(tmp_path / name, content)
    if case == "evaluate-label-not-in-model":
        data = {**data, "model": _finetuned(data, tmp_path / "ft")}
    out = tmp_path / "out"
    argv = template.format(tmp=tmp_path, out=out, **data).split()
    code, stdout, err = invoke(capsys, *argv, *(QUIET if argv[0] == "finetune" else []))
    assert code == 2, (stdout, err)
    assert err.startswith(f"pretrainkit {argv[0]}: error: ")
    assert expected in err.replace(str(tmp_path) + "/", "")
    assert "Traceback" not in err
    assert not out.exists()  # no partial output
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("out")) == []


def _finetuned(data: dict[str, Path], run: Path) -> Path:
    cli(
        "finetune", "--model", data["model"], "--train", data["train"], "--out", run, "--steps",
        1, "--batch-size", 4, "--seq-length", 32, *QUIET,
    )  # fmt: skip
    return run / "model"


CUDA_ONLY = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        pytest.param(
            ["--precision", "fp16"],
            "precision 'fp16' needs a CUDA GPU",
            marks=CUDA_ONLY,
            id="fp16-on-cpu",
        ),
        pytest.param(
            ["--device", "cuda"],
            "cuda",
            marks=CUDA_ONLY,
            id="cuda-without-gpu",
        ),
        pytest.param(
            ["--strategy", "fsdb"],
            "unknown strategy 'fsdb' (did you mean 'fsdp'?)",
            id="unknown-strategy",
        ),
        pytest.param(
            ["--strategy", "ddp", "--zero-stage", "2"],
            "zero_stage=2 applies to strategy 'deepspeed' only",
            id="zero-stage-without-deepspeed",
        ),
        pytest.param(
            ["--strategy", "fsdp", "--cpu-offload"],
            "the model is in CPU memory already",
            marks=CUDA_ONLY,
            id="cpu-offload-on-cpu",
        ),
        pytest.param(
            ["--global-batch-size", "10", "--accumulate", "4"],
            "global_batch_size 10 is not divisible by world size 1 × accumulate 4",
            id="global-batch-not-divisible",
        ),
    ],
)
def test_bad_training_option_exits_2_without_a_run_folder(
    options: list[str], expected: str, data: dict[str, Path], tmp_path: Path, capsys
) -> None:
    run = tmp_path / "run"
    code, _, err = invoke(
        capsys, "pretrain", *TINY_MODEL, *MLM_ONLY, "--data", data["shards"], "--out", run,
        "--steps", 1, "--no-progress", *options,
    )  # fmt: skip
    assert code == 2, err
    assert expected in err and "Traceback" not in err
    assert not run.exists()


def test_single_strategy_under_several_processes_is_refused(
    data: dict[str, Path], tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun --nproc-per-node 2 would
    monkeypatch.setenv("RANK", "0")
    run = tmp_path / "run"
    code, _, err = invoke(
        capsys, "finetune", "--model", data["model"], "--train", data["train"], "--out", run,
        "--steps", 1, *QUIET,
    )  # fmt: skip
    assert code == 2 and "strategy 'single' was launched with 2 processes" in err, err
    assert not run.exists()


def test_predict_creates_the_output_folder(data: dict[str, Path], tmp_path: Path, capsys) -> None:
    model = _finetuned(data, tmp_path / "ft")
    out = tmp_path / "missing" / "predictions.tsv"
    code, _, err = invoke(
        capsys, "predict", "--model", model, "--data", data["train"], "--out", out
    )
    assert code == 0, err
    rows = len(data["train"].read_text().splitlines())  # header + rows, like the output
    assert len(out.read_text().splitlines()) == rows


def test_finetune_steps_and_epochs_do_not_silently_conflict(
    data: dict[str, Path], tmp_path: Path, capsys
) -> None:
    code, out, err = invoke(
        capsys, "finetune", "--model", data["model"], "--train", data["train"], "--out",
        tmp_path / "run", "--steps", 3, "--epochs", 0.2, "--batch-size", 8, "--seq-length",
        32, *QUIET,
    )  # fmt: skip
    # Running 1 step (0.2 * 40 / 8) would ignore --steps, 3 would ignore --epochs: refused.
    assert code == 2, out
    assert "finetune: give --steps or --epochs, not both" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_failed_preprocess_keeps_the_earlier_output(
    data: dict[str, Path], tmp_path: Path, capsys
) -> None:
    out = tmp_path / "shards"
    shutil.copytree(data["shards"], out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    bad = _write(tmp_path / "corpus.txt", b"fine line .\n\xc3\x28 broken\n")
    code, _, err = invoke(
        capsys, "preprocess", "--corpus", bad, "--tokenizer", data["tokenizer"], "--objective",
        "mlm", "--seq-length", 32, "--out", out, "--overwrite",
    )  # fmt: skip
    assert code == 2
    assert f"{bad}:2: not UTF-8" in err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt", "shards"]


def test_objective_and_targets_must_match(data: dict[str, Path], tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    # bert-tiny trains mlm + nsp; the shards were made for mlm only.
    code, _, err = invoke(
        capsys, "pretrain", *TINY_MODEL, "--data", data["shards"], "--out", run, "--steps", 2,
        *QUIET,
    )  # fmt: skip
    assert code == 2
    assert "preprocessed for objective 'mlm'" in err
    assert "the model has targets ['mlm', 'nsp']" in err
    assert "--model.targets '[{name: mlm}]'" in err
    assert not run.exists()


# --- plots --------------------------------------------------------------------------------------
def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE, path
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def test_plot_writes_png_curves(data: dict[str, Path], tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(data["root"] / "run", run)
    code, out, err = invoke(capsys, "plot", run)
    assert code == 0, err
    plots = [Path(p) for p in last_json(out)["plots"]]
    assert sorted(p.name for p in plots) == [
        "grad_norm.png",
        "loss.png",
        "lr.png",
        "tokens_per_s.png",
    ]
    for plot in plots:
        assert plot.parent == run / "plots"
        width, height = _png_size(plot)
        assert width >= 200 and height >= 100

    code, _, err = invoke(capsys, "plot", tmp_path / "nothing")
    assert code == 2
    assert "nothing/metrics.jsonl: not found" in err


# --- demo ---------------------------------------------------------------------------------------
def test_demo_says_where_the_data_should_be(tmp_path: Path, monkeypatch, capsys) -> None:
    out = tmp_path / "demo"
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = invoke(capsys, "demo", "--data", empty, "--out", out)
    assert code == 2
    assert f"data folder {empty} (from --data) lacks: sst2/train.tsv, sst2/dev.tsv" in err
    assert not out.exists()

    missing = tmp_path / "nowhere"
    monkeypatch.setenv("PRETRAINKIT_DATA", str(missing))
    code, _, err = invoke(capsys, "demo", "--out", out)
    assert code == 2
    assert f"no data folder found ($PRETRAINKIT_DATA: {missing})" in err
    assert "sst2/train.tsv and sst2/dev.tsv" in err
    assert "--data DIR" in err and "PRETRAINKIT_DATA=DIR" in err
    assert not out.exists()

    monkeypatch.setenv("PRETRAINKIT_DATA", str(empty))
    (empty / "sst2").mkdir()
    _write(empty / "sst2" / "train.tsv", "1\tfine\n")
    code, _, err = invoke(capsys, "demo", "--out", out)
    assert code == 2
    assert "(from $PRETRAINKIT_DATA) lacks: sst2/dev.tsv" in err

    # An --out folder the demo did not write is never replaced.
    _write(empty / "sst2" / "dev.tsv", "1\tfine\n")
    out.mkdir()
    _write(out / "notes.txt", "mine")
    code, _, err = invoke(capsys, "demo", "--out", out)
    assert code == 2
    assert "is not a demo folder" in err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_demo_with_a_bad_sst2_row_names_it_and_writes_nothing(tmp_path: Path, capsys) -> None:
    (tmp_path / "data" / "sst2").mkdir(parents=True)
    _write(tmp_path / "data" / "sst2" / "dev.tsv", "1\tfine\n")
    train = _write(tmp_path / "data" / "sst2" / "train.tsv", "1\tfine\n0\tbad\n2\tworse\n")
    out = tmp_path / "demo"
    code, _, err = invoke(capsys, "demo", "--data", tmp_path / "data", "--out", out)
    assert code == 2
    assert f"{train}:3: expected 'label<TAB>sentence' with label 0 or 1, got '2\\tworse'" in err
    assert not out.exists()


@pytest.mark.slow  # 5-11 s: the whole quickstart, then an evaluation
def test_demo_on_a_tiny_sst2(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("PRETRAINKIT_DATA", raising=False)
    rng = random.Random(5)
    (tmp_path / "data" / "sst2").mkdir(parents=True)
    for name, rows in (("train", 120), ("dev", 30)):
        lines = []
        for _ in range(rows):
            positive = rng.random() < 0.5
            cue = rng.choice(POSITIVE if positive else NEGATIVE)
            lines.append(f"{int(positive)}\t{sentence(rng)[:-2]} and it was {cue}\n")
        _write(tmp_path / "data" / "sst2" / f"{name}.tsv", "".join(lines))
    out = tmp_path / "demo"
    code, stdout, err = invoke(
        capsys, "demo", "--data", tmp_path / "data", "--out", out, "--pretrain-steps", 2,
        "--finetune-epochs", 0.01, "--precision", "fp32",
    )  # fmt: skip
    assert code == 0, err
    summary = last_json(stdout)
    accuracy = summary["sst2_dev_accuracy"]
    assert f"SST-2 dev accuracy {accuracy:.4f}" in stdout
    assert summary["pretrain_steps"] == 2
    assert summary["finetune_steps"] == 1  # ceil(0.01 * 120 / 32)
    assert summary["pretrain_tokens_per_s"] > 0
    assert summary["runs"] == [str(out / "pretrain"), str(out / "finetune")]
    plots = [Path(p) for p in summary["plots"]]
    names = {(p.parent.parent.name, p.name) for p in plots}
    assert {("pretrain", "loss.png"), ("finetune", "loss.png")} <= names
    assert ("finetune", "dev_accuracy.png") in names
    for plot in plots:
        _png_size(plot)
    assert (Path(summary["model"]) / "model.safetensors").is_file()
    # The reported accuracy is the model's on the 30 dev rows, as `evaluate` scores the
    # headerless file itself.
    code, stdout, err = invoke(
        capsys, "evaluate", "--model", summary["model"], "--data",
        tmp_path / "data" / "sst2" / "dev.tsv", "--columns", "label,text_a", "--seq-length", 64,
    )  # fmt: skip
    assert code == 0, err
    scores = last_json(stdout)
    assert scores["rows"] == 30
    assert round(scores["accuracy"], 4) == accuracy
    assert round(accuracy * 30) == pytest.approx(accuracy * 30, abs=0.01)  # k right of 30
