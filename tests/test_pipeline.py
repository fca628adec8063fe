"""End to end through the CLI: vocab → shards → pre-train (learning, exact resume) → fine-tune."""

from __future__ import annotations

import json
import math
import os
import signal
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers import (
    MLM_ONLY,
    QUIET,
    TINY_MODEL,
    OneThread,
    cli,
    invoke,
    last_json,
    popen_cli,
    read_metrics,
    write_classification,
    write_corpus,
)
from safetensors.torch import load_file

from pretrainkit.training.checkpoint import list_checkpoints


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with OneThread():
        yield


def _vocab_and_shards(root: Path, corpus: Path, objective: str) -> Path:
    """Train a WordPiece vocabulary on ``corpus`` and preprocess it; returns the shard folder."""
    tokenizer, shards = root / "tokenizer", root / f"shards-{objective}"
    if not tokenizer.exists():
        cli("vocab", "--corpus", corpus, "--kind", "wordpiece", "--size", 300, "--out", tokenizer)
    if shards.exists():  # made for an earlier test of this module (a parametrized one)
        return shards
    cli(
        "preprocess", "--corpus", corpus, "--tokenizer", tokenizer, "--objective", objective,
        "--seq-length", 32, "--out", shards,
    )  # fmt: skip
    manifest = json.loads((shards / "manifest.json").read_text())
    assert (manifest["objective"], manifest["seq_length"]) == (objective, 32)
    assert manifest["counts"]["documents"] == 80
    return shards


@pytest.fixture(scope="module")
def grammar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("grammar")
    write_corpus(root / "corpus.txt", documents=80, seed=0)
    return root


# --- pre-training learns ------------------------------------------------------------------------
def test_mlm_loss_falls_by_30_percent_in_200_steps(grammar: Path, tmp_path: Path) -> None:
    shards = _vocab_and_shards(grammar, grammar / "corpus.txt", "mlm")
    tokenizer = json.loads((shards / "manifest.json").read_text())["tokenizer"]
    run = tmp_path / "run"
    cli(
        "pretrain", *TINY_MODEL, *MLM_ONLY, "--data", shards, "--out", run, "--steps", 200,
        "--batch-size", 16, "--lr", 1e-3, "--warmup", 20, "--log-every", 1, *QUIET,
    )  # fmt: skip
    records = read_metrics(run)
    assert [r["step"] for r in records] == list(range(1, 201))
    losses = [r["loss"] for r in records]
    first, last = sum(losses[:5]) / 5, sum(losses[-20:]) / 20
    # An untrained model is close to uniform over the vocabulary.
    assert first == pytest.approx(math.log(tokenizer["vocab_size"]), rel=0.05)
    assert last <= 0.7 * first, (first, last)
    assert records[0]["mlm_accuracy"] < 0.1
    assert sum(r["mlm_accuracy"] for r in records[-20:]) / 20 > 0.2
    # The warmup reaches the peak at step 21 and the linear decay ends near 0.
    assert records[0]["lr"] == pytest.approx(1e-3 / 20)
    assert records[20]["lr"] == pytest.approx(1e-3)
    assert records[-1]["lr"] == pytest.approx(1e-3 / 180)
    config = (run / "model" / "config.yaml").read_text()
    assert f"vocab_size: {tokenizer['vocab_size']}" in config and "hidden_size: 64" in config


# --- exact resume after a hard kill -------------------------------------------------------------
def _stop(process) -> None:
    """SIGSTOP the child and wait until it is stopped, so its files hold still."""
    os.kill(process.pid, signal.SIGSTOP)
    _, status = os.waitpid(process.pid, os.WUNTRACED)
    if not os.WIFSTOPPED(status):
        pytest.fail("the run finished before it could be killed; it should take longer")


def _logged_steps(run: Path) -> list[int]:
    steps = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        try:
            steps.append(json.loads(line)["step"])
        except json.JSONDecodeError:
            continue  # a line being written
    return steps


def _kill_after_checkpoint(process, run: Path, first: int, timeout: float = 120.0) -> int:
    """SIGKILL the run once it has a checkpoint at step >= ``first`` and logged a step past it.

    Until the loop starts (metrics.jsonl appears) the process runs freely; then it runs in
    slices of a few milliseconds and its folder is only read while it is stopped.

    Returns:
        The step of the last checkpoint before the kill.
    """
    deadline = time.monotonic() + timeout
    while not (run / "metrics.jsonl").exists():
        assert process.poll() is None, "the run exited before training started"
        assert time.monotonic() < deadline, "the run did not start training in time"
        time.sleep(0.02)
    while True:
        _stop(process)
        saved = list_checkpoints(run)
        steps = _logged_steps(run)
        if saved and saved[-1][0] >= first and steps and max(steps) > saved[-1][0]:
            os.kill(process.pid, signal.SIGKILL)
            process.returncode = -signal.SIGKILL  # reaped below; Popen must not wait again
            os.waitpid(process.pid, 0)
            return saved[-1][0]
        assert time.monotonic() < deadline, "no checkpoint in time"
        os.kill(process.pid, signal.SIGCONT)
        time.sleep(0.005)


def _same_numbers(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in ("tokens_per_s", "elapsed")}


@pytest.mark.slow  # 5-10 s: three training processes
@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs POSIX job-control signals")
@pytest.mark.parametrize("pack", [[], ["--pack"]], ids=["padded", "packed"])
def test_resume_after_sigkill_gives_the_same_losses_and_weights(
    grammar: Path, tmp_path: Path, pack: list[str]
) -> None:
    # Sentence pairs + NSP + dynamic masking: the stream with the most state to restore.
    shards = _vocab_and_shards(grammar, grammar / "corpus.txt", "bert")
    args = [
        "pretrain", *TINY_MODEL, "--data", shards, "--steps", 12, "--save-every", 3,
        "--log-every", 1, "--batch-size", 8, "--lr", 1e-3, *QUIET, *pack,
    ]  # fmt: skip
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    reference = popen_cli(*args, "--out", straight, log=tmp_path / "straight.log")
    victim = popen_cli(*args, "--out", killed, log=tmp_path / "killed.log")
    try:
        checkpoint = _kill_after_checkpoint(victim, killed, first=4)
    finally:
        if victim.returncode is None:
            victim.kill()
            victim.wait()
    assert reference.wait(timeout=120) == 0, (tmp_path / "straight.log").read_text()
    assert checkpoint in (6, 9)
    # Two checkpoints are kept; --resume must pick the latest.
    assert [step for step, _ in list_checkpoints(killed)] == [checkpoint - 3, checkpoint]
    assert not (killed / "model").exists()  # it really died mid-run
    assert max(_logged_steps(killed)) > checkpoint

    resumed = popen_cli(*args, "--out", killed, "--resume", log=tmp_path / "resumed.log")
    assert resumed.wait(timeout=120) == 0, (tmp_path / "resumed.log").read_text()
    assert f"(step {checkpoint})" in (tmp_path / "resumed.log").read_text()

    expected, got = read_metrics(straight), read_metrics(killed)
    # The steps the killed run logged past its checkpoint were dropped, then written again.
    assert [r["step"] for r in got] == [r["step"] for r in expected] == list(range(1, 13))
    for mine, theirs in zip(got, expected):
        assert {"mlm_loss", "nsp_loss", "nsp_accuracy"} <= set(mine)
        assert _same_numbers(mine) == _same_numbers(theirs), mine["step"]
    assert [r["loss"] for r in got[checkpoint:]] == [r["loss"] for r in expected[checkpoint:]]

    final, reference_weights = (
        load_file(run / "model" / "model.safetensors") for run in (killed, straight)
    )
    assert final.keys() == reference_weights.keys()
    for name, tensor in reference_weights.items():
        assert torch.equal(final[name], tensor), name


# --- fine-tuning --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny MLM model pre-trained for 40 steps on sentences that end in cue words."""
    root = tmp_path_factory.mktemp("reviews")
    shards = _vocab_and_shards(root, write_corpus(root / "corpus.txt", reviews=True), "mlm")
    cli(
        "pretrain", *TINY_MODEL, *MLM_ONLY, "--data", shards, "--out", root / "run", "--steps",
        40, "--batch-size", 16, "--lr", 1e-3, "--warmup", 4, *QUIET,
    )  # fmt: skip
    return root / "run" / "model"


@pytest.mark.parametrize("pairs", [False, True], ids=["single", "pair"])
def test_finetune_evaluate_predict(pretrained: Path, tmp_path: Path, capsys, pairs: bool) -> None:
    train, dev, test = (tmp_path / f"{name}.tsv" for name in ("train", "dev", "test"))
    write_classification(train, 200, seed=1, pairs=pairs)
    write_classification(dev, 40, seed=2, pairs=pairs)
    # Every 20th held-out label is wrong: a model that learnt the cue words scores 0.95.
    gold = write_classification(test, 100, seed=3, pairs=pairs, flip_every=20)
    run = tmp_path / "finetune"
    code, out, err = invoke(
        capsys, "finetune", "--model", pretrained, "--train", train, "--dev", dev, "--out", run,
        "--epochs", 8, "--batch-size", 16, "--lr", 1e-3, "--seq-length", 32, "--pooling",
        "mean", "--eval-every", 25, "--log-every", 5, *QUIET,
    )  # fmt: skip
    assert code == 0, err
    result = last_json(out)
    assert result["steps"] == 100  # 8 epochs of 200 rows in batches of 16
    assert result["last_eval"]["accuracy"] >= 0.9
    labels = ["neg", "pos"] if pairs else ["0", "1"]
    assert json.loads((run / "run.json").read_text())["task"]["labels"] == labels
    assert json.loads((run / "model" / "task.json").read_text())["labels"] == labels
    dev_records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in dev_records if "dev/accuracy" in r] == [25, 50, 75, 100]
    losses = [r["loss"] for r in read_metrics(run)]
    assert losses[-1] < 0.5 * losses[0]

    model = run / "model"
    code, out, err = invoke(
        capsys, "evaluate", "--model", model, "--data", test, "--seq-length", 32
    )
    assert code == 0, err
    scores = last_json(out)
    assert scores["rows"] == 100
    assert scores["accuracy"] >= 0.9

    predictions = tmp_path / "predictions.tsv"
    code, out, err = invoke(
        capsys, "predict", "--model", model, "--data", test, "--out", predictions,
        "--seq-length", 32,
    )  # fmt: skip
    assert code == 0, err
    assert last_json(out) == {"out": str(predictions)}
    lines = predictions.read_text().splitlines()
    assert lines[0] == "label\tprobability"
    assert len(lines) == 1 + 100
    rows = [line.split("\t") for line in lines[1:]]
    assert {label for label, _ in rows} <= set(labels)
    assert all(0.5 <= float(p) <= 1.0 for _, p in rows)
    agree = sum(label == truth for (label, _), truth in zip(rows, gold))
    assert agree / 100 == pytest.approx(scores["accuracy"])

    # A file without the label column gets the same predictions.
    unlabelled = tmp_path / "unlabelled.tsv"
    unlabelled.write_text(
        "".join(line.split("\t", 1)[1] + "\n" for line in test.read_text().splitlines())
    )
    code, _, err = invoke(
        capsys, "predict", "--model", model, "--data", unlabelled, "--out",
        tmp_path / "again.tsv", "--seq-length", 32,
    )  # fmt: skip
    assert code == 0, err
    assert (tmp_path / "again.tsv").read_text() == predictions.read_text()


def test_finetune_starts_from_the_pretrained_encoder(pretrained: Path, tmp_path: Path) -> None:
    train = tmp_path / "train.tsv"
    write_classification(train, 16, seed=4)
    run = tmp_path / "finetune"
    # One step with a negligible learning rate: the weights stay where fine-tuning began.
    cli(
        "finetune", "--model", pretrained, "--train", train, "--out", run, "--steps", 1,
        "--batch-size", 16, "--lr", 1e-12, "--seq-length", 32, *QUIET,
    )  # fmt: skip
    before = load_file(pretrained / "model.safetensors")
    after = load_file(run / "model" / "model.safetensors")
    shared = [name for name in before if name.startswith(("embedding.", "encoder."))]
    assert len(shared) == 5 + 2 * 16  # embedding + two layers, copied key for key
    for name in shared:
        torch.testing.assert_close(after[name], before[name], rtol=0, atol=1e-9)
    assert not [name for name in after if name.startswith("targets.mlm")]
    assert after["targets.classification.classifier.weight"].shape == (2, 64)  # labels 0, 1
    config = yaml.safe_load((run / "model" / "config.yaml").read_text())
    assert config["targets"] == [
        {"name": "classification", "labels": ["0", "1"], "pooling": "mean", "dropout": 0.1}
    ]
