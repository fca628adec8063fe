"""Regression: the STS-B reader and its errors, the target, finetune/evaluate/predict with
--task regression, and SAMP on a regression head (Spearman)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from helpers import NEGATIVE, POSITIVE, invoke, last_json, require, sentence
from samp_helpers import TINY, VOCAB

import pretrainkit
from pretrainkit import samp
from pretrainkit.errors import DataError
from pretrainkit.tasks.metrics import regression_metrics
from pretrainkit.tasks.regression import read_regression_file, regression_batches
from pretrainkit.tokenization import load_tokenizer


def write_sts(path, rows: int, seed: int):
    """``a,b,score`` rows: the score is 4 + noise when the cue word is positive, 1 + noise else."""
    rng = random.Random(seed)
    lines = []
    for _ in range(rows):
        positive = rng.random() < 0.5
        cue = rng.choice(POSITIVE if positive else NEGATIVE)
        score = (4.0 if positive else 1.0) + rng.uniform(-0.5, 0.5)
        lines.append(f'"{sentence(rng)}","it was {cue} , really .",{score:.2f}')
    path.write_text("\n".join(lines) + "\n")
    return path


def test_sts_csv_reader_and_its_errors(tmp_path):
    good = tmp_path / "sts.csv"
    good.write_text('"a, quoted",b,4.5\nc,d,0\n')
    data = read_regression_file(good)
    assert data.texts_a == ["a, quoted", "c"] and data.labels == ["4.5", "0"]
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,4\nc,d,high\n")
    with pytest.raises(DataError, match=r"bad.csv:2: score 'high' is not a number"):
        read_regression_file(bad)
    short = tmp_path / "short.csv"
    short.write_text("a,b\n")
    with pytest.raises(DataError, match=r"short.csv:1: expected 3 comma-separated fields"):
        read_regression_file(short)
    tokenizer = load_tokenizer_from(tmp_path)
    (batch,) = regression_batches(data, tokenizer, 16, 8)
    assert batch["labels"].dtype == torch.float32 and batch["labels"].tolist() == [4.5, 0.0]


def load_tokenizer_from(root):
    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n")
    return load_tokenizer(vocab)


def test_regression_target_loss_is_mse():
    targets = [{"name": "regression", "options": {"pooling": "mean"}}]
    model = pretrainkit.build_model("bert-tiny", {**TINY, "targets": targets})
    ids = torch.randint(5, len(VOCAB), (3, 6))
    labels = torch.tensor([1.0, 2.5, 4.0])
    out = model(ids, attention_mask=torch.ones_like(ids), labels=labels)
    assert out.logits.shape == (3,)
    assert torch.allclose(out.loss, ((out.logits - labels) ** 2).mean())


def test_regression_metrics_match_scipy():
    stats = require("scipy.stats")  # a dev dependency: skip without it, fail in CI
    rng = np.random.RandomState(0)
    gold = rng.randint(0, 5, 40).astype(float)  # ties, as in STS-B
    pred = gold + rng.randn(40)
    got = regression_metrics(pred, gold)
    assert got["spearman"] == pytest.approx(stats.spearmanr(pred, gold)[0], abs=1e-12)
    assert got["pearson"] == pytest.approx(stats.pearsonr(pred, gold)[0], abs=1e-12)


def test_finetune_evaluate_predict_and_quantize_a_regression_model(tmp_path, capsys):
    base = pretrainkit.build_model("bert-tiny", {**TINY, "targets": [{"name": "mlm"}]})
    base.tokenizer = load_tokenizer_from(tmp_path)
    base.save(tmp_path / "base")
    files = {n: write_sts(tmp_path / f"{n}.csv", 192 if n == "train" else 48, i)
             for i, n in enumerate(("train", "calib", "select", "report"))}  # fmt: skip
    code, out, err = invoke(
        capsys, "finetune", "--task", "regression", "--model", tmp_path / "base",
        "--train", files["train"], "--dev", files["select"], "--out", tmp_path / "run",
        "--steps", "80", "--batch-size", "16", "--seq-length", "32", "--pooling", "mean",
        "--lr", "3e-3", "--warmup", "4", "--precision", "fp32", "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    model_dir = tmp_path / "run" / "model"
    code, out, err = invoke(capsys, "evaluate", "--model", model_dir, "--data", files["report"])
    assert code == 0, err
    metrics = last_json(out)
    assert metrics["spearman"] > 0.7  # learnt the cue word (a random head scores about 0)
    code, out, err = invoke(
        capsys, "predict", "--model", model_dir, "--data", files["report"],
        "--out", tmp_path / "scores.tsv",
    )  # fmt: skip
    assert code == 0, err
    lines = (tmp_path / "scores.tsv").read_text().splitlines()
    assert lines[0] == "score" and len(lines) == 49

    model = pretrainkit.load(model_dir)
    q = samp.quantize(
        model, files["calib"], files["select"], tolerance=1.0, report=files["report"], rounds=1
    )
    report = q.samp_plan.report
    assert report["metric_name"] == "spearman" and report["chosen_drop_select"] <= 1.0
    assert report["float_metric_report"] == pytest.approx(100 * metrics["spearman"], abs=1e-6)
