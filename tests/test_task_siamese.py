"""The siamese task and the pair reader it shares with cross_encoder: MPTS and pair files and
their bad input, metrics against scikit-learn, the head's pairing, the command line, and the
real MPTS dev file."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import data_dir, invoke, require
from samp_helpers import TINY, VOCAB
from task_samples import SAMPLES

import pretrainkit
from pretrainkit.errors import ConfigError, DataError
from pretrainkit.targets.siamese import SiameseTarget
from pretrainkit.tasks import build_task
from pretrainkit.tasks.mpts_format import perspective_metrics, read_pairs
from pretrainkit.tokenization import Tokenizer, load_tokenizer

# Through task_samples: importing a sample module first would be a circular import.
write_perspective_pairs = SAMPLES["siamese"].write
sk = require("sklearn.metrics", "metrics cross-check")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    vocab = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n")
    return load_tokenizer(vocab)


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


MPTS = "id\ttexta\ttextb\tAction\tDrama\n7_8\tx y\tz\t1\t-1\n9_1\tp\tq\t0\t1\n"


# --- reading --------------------------------------------------------------------------------
def test_read_mpts_and_pair_files(tmp_path: Path) -> None:
    data = read_pairs(write(tmp_path / "m.tsv", MPTS))
    assert data.perspectives == ("Action", "Drama") and data.ids == ["7_8", "9_1"]
    assert (data.texts_a, data.texts_b, data.values) == (
        ["x y", "p"],
        ["z", "q"],
        [[1, -1], [0, 1]],
    )
    assert data.gold().tolist() == [[1, 0], [0, 1]]  # only 1 is "similar"
    # A dev file's perspectives are put in the training order.
    again = read_pairs(tmp_path / "m.tsv", ["Drama", "Action"])
    assert again.perspectives == ("Drama", "Action") and again.values == [[-1, 1], [1, 0]]
    # Without labels (predict): the model's perspectives name the columns.
    bare = read_pairs(write(tmp_path / "b.tsv", "id\ttexta\ttextb\n1\ta\tb\n"), ["Drama"], False)
    assert bare.values is None and bare.perspectives == ("Drama",)
    pair = read_pairs(write(tmp_path / "p.tsv", "text_a\tlabel\ttext_b\r\nx\t1\ty\nz\t0\tw\n"))
    assert pair.perspectives == ("label",) and pair.values == [[1], [0]]
    assert pair.ids == ["1", "2"]  # no id column: row numbers
    headerless = read_pairs(write(tmp_path / "h.tsv", "0\ta\tb\n"), columns="label,text_a,text_b")
    assert (headerless.values, headerless.first_line) == ([[0]], 1)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (MPTS.replace("\t-1\n", "\t2\n"), 2, "Drama: value '2' is not one of -1, 0, 1"),
        (MPTS.replace("\t-1\n", "\t\n"), 2, "Drama: value '' is not one of"),
        (MPTS.replace("9_1\tp", "9_1\tp\textra"), 3, "expected 5 tab-separated fields, got 6"),
        ("id\ttexta\tAction\n1\ta\t1\n", 1, "an MPTS header starts id, texta, textb"),
        ("id\ttexta\ttextb\n1\ta\tb\n", 1, "names no perspective column"),
        ("label\ttext_a\n1\ta\n", 1, "lacks the text_b column"),
        ("label\ttext_a\ttext_c\n1\ta\tb\n", 1, "unknown column 'text_c'"),
        ("label\ttext_a\ttext_b\n-1\ta\tb\n", 2, "label: value '-1' is not one of 0, 1"),
        ("id\ttexta\ttextb\tA\tA\n1\ta\tb\t1\t1\n", 1, "column 'A' appears twice"),
        ("id\ttexta\ttextb\tA\n", 2, "has a header but no rows"),
        (b"id\ttexta\ttextb\tA\n1\t\xff\tb\t1\n", 2, "not UTF-8"),
        ("", None, "file is empty"),
    ],
)
def test_bad_input_names_file_and_line(
    tmp_path: Path, text: str | bytes, line: int | None, message: str
) -> None:
    path = write(tmp_path / "bad.tsv", text)
    with pytest.raises(DataError, match=message) as error:
        read_pairs(path)
    assert error.value.path == path and error.value.line == line
    assert str(path) in str(error.value)


def test_other_perspectives_than_training_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="perspectives Action, Drama differ from the model's"):
        read_pairs(write(tmp_path / "m.tsv", MPTS), ["Action", "Comedy"])
    with pytest.raises(ConfigError, match="drop --columns"):
        read_pairs(tmp_path / "m.tsv", columns="id,texta,textb,Action,Drama")


# --- metrics --------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    gold = (rng.random((40, 3)) < [0.5, 0.2, 0.7]).astype(int)
    scores = np.clip(gold * 0.3 + rng.random((40, 3)) * 0.8, 0, 1)
    scores[:5, 0] = 0.5  # ties at the threshold count as positive, and share their AUC rank
    names = ["a", "b", "c"]
    result = perspective_metrics(scores, gold, names, 0.5)
    predicted = (scores >= 0.5).astype(int)
    assert result["weighted_f1"] == pytest.approx(
        sk.f1_score(gold, predicted, average="weighted", zero_division=0)
    )
    assert result["macro_f1"] == pytest.approx(
        sk.f1_score(gold, predicted, average="macro", zero_division=0)
    )
    for i, name in enumerate(names):
        assert result[f"f1_{name}"] == pytest.approx(sk.f1_score(gold[:, i], predicted[:, i]))
        assert result[f"accuracy_{name}"] == pytest.approx(
            sk.accuracy_score(gold[:, i], predicted[:, i])
        )
        assert result[f"auc_{name}"] == pytest.approx(sk.roc_auc_score(gold[:, i], scores[:, i]))
    assert result["macro_auc"] == pytest.approx(sk.roc_auc_score(gold, scores, average="macro"))


def test_undefined_auc_is_left_out() -> None:
    gold = np.array([[1, 0], [1, 1], [1, 0]])
    result = perspective_metrics(np.full((3, 2), 0.7), gold, ["all", "some"], 0.5)
    assert "auc_all" not in result and result["macro_auc"] == pytest.approx(0.5)
    assert result["f1_all"] == 1.0 and result["weighted_f1"] == pytest.approx((3 + 0.5) / 4)


# --- the head and its batches -----------------------------------------------------------------
def test_batches_pair_consecutive_rows_and_the_head_scores_each_pair(
    tokenizer: Tokenizer, tmp_path: Path
) -> None:
    write_perspective_pairs(tmp_path / "d.tsv", 5, 0)
    task = build_task("siamese", {"seq_length": 16})
    data = task.read(tmp_path / "d.tsv")
    task.fit_labels(data)
    assert task.labels == ["animal", "mood"]
    (batch,) = task.batches(data, tokenizer, 8)
    assert batch["input_ids"].shape[0] == 10 and "labels" not in batch  # [2b, s]
    first = tokenizer.build_inputs(tokenizer.encode(data.texts_b[0]), None, 16)[0]
    assert batch["input_ids"][1, : len(first)].tolist() == first  # pair 0's text b is row 1
    stream = task.stream(data, tokenizer, 0, 0, 1)
    train = task.collate([next(stream) for _ in range(3)], tokenizer.pad_id)
    assert train["input_ids"].shape[0] == 6 and train["labels"].shape == (3, 2)
    assert train["labels"].dtype == torch.float32
    torch.manual_seed(0)
    head = SiameseTarget(8, ["animal", "mood"], projection_size=4, dropout=0.0)
    hidden = torch.randn(6, 3, 8)
    logits = head(hidden, None, None).logits
    assert logits.shape == (3, 2) and logits.abs().max() <= 2 + 1e-6  # |cosine| / 0.5
    swapped = hidden.view(3, 2, 3, 8).flip(1).reshape(6, 3, 8)
    assert torch.allclose(head(swapped, None, None).logits, logits, atol=1e-6)  # symmetric
    out = head(hidden, None, train["labels"])
    assert out.loss is not None and out.loss.item() > 0
    with pytest.raises(ValueError, match="pairs of sequences"):
        head(hidden[:5], None, None)


# --- the command line -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("base")
    (root / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    torch.manual_seed(0)
    model = pretrainkit.build_model("bert-tiny", {**TINY, "targets": [{"name": "mlm"}]})
    model.tokenizer = load_tokenizer(root / "vocab.txt")
    return model.save(root / "model")


def cli_round_trip(capsys, task: str, base: Path, tmp_path: Path, steps: int) -> dict:
    """finetune → evaluate → predict through the command line; the evaluation's metrics."""
    train, dev = tmp_path / "train.tsv", tmp_path / "dev.tsv"
    write_perspective_pairs(train, 192, 1)
    write_perspective_pairs(dev, 32, 2)
    code, _, err = invoke(
        capsys, "finetune", "--task", task, "--model", base, "--train", train, "--dev", dev,
        "--out", tmp_path / "run", "--steps", steps, "--lr", "3e-3", "--batch-size", "16",
        "--seq-length", "16", "--precision", "fp32", "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    folder = tmp_path / "run" / "model"
    assert json.loads((folder / "task.json").read_text())["labels"] == ["animal", "mood"]
    code, out, err = invoke(capsys, "evaluate", "--model", folder, "--data", dev)
    assert code == 0, err
    scored = json.loads(out[out.index("{") :])
    for key in ("weighted_f1", "f1_animal", "auc_mood", "accuracy_animal"):
        assert 0 <= scored[key] <= 1, key
    code, _, err = invoke(
        capsys, "predict", "--model", folder, "--data", dev, "--out", tmp_path / "p.tsv"
    )
    assert code == 0, err
    lines = (tmp_path / "p.tsv").read_text().splitlines()
    assert lines[0] == "id\tanimal\tmood" and len(lines) == 33
    ids = [line.split("\t")[0] for line in dev.read_text().splitlines()[1:]]
    for line, row_id in zip(lines[1:], ids):
        fields = line.split("\t")
        assert fields[0] == row_id and all(0 <= float(p) <= 1 for p in fields[1:])
    return scored


def test_cli_finetune_evaluate_predict(capsys, base: Path, tmp_path: Path) -> None:
    scored = cli_round_trip(capsys, "siamese", base, tmp_path, 100)
    assert scored["task"] == "siamese" and scored["weighted_f1"] > 0.8


# --- the real MPTS dev file -----------------------------------------------------------------
def test_mpts_dev_reads_and_runs(tokenizer: Tokenizer) -> None:
    path = data_dir("mpts/dev.tsv") / "mpts" / "dev.tsv"
    task = build_task("siamese", {"seq_length": 32, "projection_size": 8})
    data = task.read(path)
    task.fit_labels(data)
    assert len(data) == 734 and len(task.labels or []) == 27 and task.labels[0] == "Action"
    values = np.asarray(data.values)
    assert set(np.unique(values)) <= {-1, 0, 1} and (values == 1).any(axis=0).any()
    assert data.gold().sum() == (values == 1).sum()
    sub = task.subset(data, list(range(6)))
    torch.manual_seed(0)
    model = pretrainkit.build_model(
        "bert-tiny", {**TINY, "targets": [dataclasses.asdict(task.target())]}
    )
    (batch,) = task.batches(sub, tokenizer, 8)
    with torch.no_grad():
        logits = model(**batch).logits
    outputs = task.row_outputs(logits, batch)
    assert len(outputs) == 6 and outputs[0].shape == (27,)
    assert len(task.prediction_lines(outputs, sub)) == 7
    rows = random.Random(0).sample(range(len(data)), 3)
    assert task.subset(data, rows).ids == [data.ids[r] for r in rows]
