"""The multi_label task: reader and bad input, batches, the head, metrics against
scikit-learn, the dev-tuned threshold, predictions read back, and the command line."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import invoke, require
from samp_helpers import TINY, VOCAB
from task_samples import SAMPLES

import pretrainkit
from pretrainkit.data import BatchIterator
from pretrainkit.errors import ConfigError, DataError
from pretrainkit.targets.multi_label import MultiLabelTarget
from pretrainkit.tasks import build_task, task_of
from pretrainkit.tasks.multi_label import (
    MultiLabel,
    multi_label_metrics,
    read_multi_label_tsv,
    tune_threshold,
)
from pretrainkit.tokenization import Tokenizer, load_tokenizer
from pretrainkit.workflows.finetune import evaluate, finetune, model_outputs

metrics_module = require("sklearn.metrics", "metrics cross-check")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    vocab = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n")
    return load_tokenizer(vocab)


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


# --- reading --------------------------------------------------------------------------------
def test_read_rows_pairs_and_empty_label_fields(tmp_path: Path) -> None:
    path = write(tmp_path / "a.tsv", "text_a\tlabels\ttext_b\r\nx\tb, a\ty\nz\t\tw\n")
    data = read_multi_label_tsv(path)
    assert data.labels == [["b", "a"], []]  # spaces stripped; an empty field: no label
    assert (data.texts_a, data.texts_b, len(data)) == (["x", "z"], ["y", "w"], 2)
    task = MultiLabel()
    task.fit_labels(data)
    assert task.labels == ["a", "b"]
    headerless = write(tmp_path / "b.tsv", "2,10\tfirst\n\tsecond\n")
    data = read_multi_label_tsv(headerless, columns="labels,text_a")
    assert (data.labels, data.first_line) == ([["2", "10"], []], 1)
    task.fit_labels(data)
    assert task.labels == ["2", "10"]  # numbers sort by value
    unlabelled = read_multi_label_tsv(
        write(tmp_path / "c.tsv", "\ufefftext_a\nq\n"), require_labels=False
    )
    assert unlabelled.labels is None and unlabelled.texts_a == ["q"]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("labels\ttext_a\na\tx\nb\tx\ty\n", 3, "expected 2 tab-separated fields"),
        ("labels\ttext_a\na,a\tx\n", 2, "label 'a' appears twice"),
        ("labels\ttext_a\na,,b\tx\n", 2, "empty label in 'a,,b'"),
        ("labels\ttext_a\na,\tx\n", 2, "empty label"),
        ("label\ttext_a\na\tx\n", 1, "unknown column 'label' (did you mean 'labels'?)"),
        ("labels\ttext_a\ttext_a\na\tx\ty\n", 1, "column 'text_a' appears twice"),
        ("labels\ttext_b\na\tx\n", 1, "lacks the text_a column"),
        ("labels\ttext_a\n", 2, "has a header but no rows"),
        (b"labels\ttext_a\na\t\xff\n", 2, "not UTF-8"),
    ],
)
def test_bad_files_name_file_and_line(tmp_path: Path, text, line: int, message: str) -> None:
    path = write(tmp_path / "bad.tsv", text)
    with pytest.raises(DataError, match=f"bad.tsv:{line}: .*{re.escape(message)}") as error:
        read_multi_label_tsv(path)
    assert error.value.line == line


def test_unknown_labels_and_missing_columns(tmp_path: Path) -> None:
    train = read_multi_label_tsv(write(tmp_path / "train.tsv", "labels\ttext_a\nsport\tx\n"))
    task = MultiLabel()
    task.fit_labels(train)
    dev = write(tmp_path / "dev.tsv", "labels\ttext_a\nsport\tx\nsport,sports\ty\n")
    with pytest.raises(DataError, match=r"dev.tsv:3: label 'sports' is not one of the training"):
        task.read(dev)
    with pytest.raises(DataError, match="empty; expected a header"):
        read_multi_label_tsv(write(tmp_path / "empty.tsv", ""))
    with pytest.raises(DataError, match="lacks the labels column"):
        read_multi_label_tsv(write(tmp_path / "nolabels.tsv", "text_a\nx\n"))
    with pytest.raises(DataError, match="no row has a label"):
        task.fit_labels(read_multi_label_tsv(write(tmp_path / "none.tsv", "labels\ttext_a\n\tx\n")))
    with pytest.raises(DataError, match="line 1 is a header"):
        read_multi_label_tsv(write(tmp_path / "h.tsv", "labels\ttext_a\na\tx\n"), ["a"], True,
                             ("labels", "text_a"))  # fmt: skip
    with pytest.raises(DataError, match="unknown column 'label'"):
        read_multi_label_tsv(write(tmp_path / "c.tsv", "a\tx\n"), columns="label,text_a")


def test_options_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"threshold must be in \(0, 1\), got 1.5"):
        build_task("multi_label", {"threshold": 1.5})
    with pytest.raises(ConfigError, match="pooling must be one of"):
        build_task("multi_label", {"pooling": "sum"})
    with pytest.raises(ConfigError, match="unknown"):
        build_task("multi_label", {"tresh": 0.3})


# --- the head and the batches -------------------------------------------------------------------
def test_head_loss_is_bce() -> None:
    torch.manual_seed(0)
    head = MultiLabelTarget(16, ["a", "b", "c"], dropout=0.0)
    hidden, mask = torch.randn(2, 5, 16), torch.ones(2, 5, dtype=torch.long)
    hot = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    with torch.no_grad():
        out = head(hidden, mask, hot)
        assert out.logits.shape == (2, 3)
        expected = float(F.binary_cross_entropy_with_logits(out.logits, hot))
        assert float(out.loss) == pytest.approx(expected)
        assert head(hidden, mask, None).loss is None


def test_stream_batches_and_resume(tmp_path: Path, tokenizer) -> None:
    path = tmp_path / "train.tsv"
    SAMPLES["multi_label"].write(path, 20, 0)
    task = MultiLabel()
    data = task.read(path)
    task.fit_labels(data)

    def batches() -> BatchIterator:
        stream = task.stream(data, tokenizer, 3, 0, 1)
        return BatchIterator(stream, 4, tokenizer.pad_id, collate_fn=task.collate)

    first = batches()
    batch = first.next_batch()
    assert batch["labels"].dtype == torch.float32 and batch["labels"].shape == (4, 6)
    assert batch["input_ids"].shape[0] == 4 and set(batch["labels"].unique().tolist()) <= {0, 1}
    state = json.loads(json.dumps(first.state_dict()))
    expected = first.next_batch()
    again = batches()
    again.load_state_dict(state)
    resumed = again.next_batch()
    assert all(torch.equal(v, resumed[k]) for k, v in expected.items())
    # Hundreds of labels fit: the labels tensor is [b, L] whatever the inputs' length.
    many = ",".join(f"l{i}" for i in range(300))
    wide = read_multi_label_tsv(write(tmp_path / "wide.tsv", f"labels\ttext_a\n{many}\tthe\n"))
    task.fit_labels(wide)
    stream = task.stream(wide, tokenizer, 0, 0, 1)
    batch = task.collate([next(stream), next(stream)], tokenizer.pad_id)
    assert batch["labels"].shape == (2, 300) and batch["labels"].sum() == 600


# --- metrics and the threshold ------------------------------------------------------------------
def _random_case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    rows, labels = int(rng.integers(1, 30)), int(rng.integers(1, 8))
    gold = rng.random((rows, labels)) < rng.uniform(0.05, 0.6)
    predicted = rng.random((rows, labels)) < rng.uniform(0.05, 0.6)
    return predicted, gold


def test_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    for _ in range(120):
        predicted, gold = _random_case(rng)
        ours = multi_label_metrics(predicted, gold)
        if gold.shape[1] == 1:  # sklearn reads one column as binary: add a label never used
            predicted, gold = (np.pad(a, ((0, 0), (0, 1))) for a in (predicted, gold))
        assert ours["micro_f1"] == pytest.approx(
            metrics_module.f1_score(gold, predicted, average="micro", zero_division=1.0)
        )
        if (gold | predicted).any():  # labels absent from both are skipped: sklearn's nan
            macro = metrics_module.f1_score(gold, predicted, average="macro", zero_division=np.nan)
            assert ours["macro_f1"] == pytest.approx(macro)
        assert ours["exact_match"] == pytest.approx(metrics_module.accuracy_score(gold, predicted))
    nothing = np.zeros((3, 2), dtype=bool)
    assert multi_label_metrics(nothing, nothing) == {
        "micro_f1": 1.0, "macro_f1": 1.0, "exact_match": 1.0,
    }  # fmt: skip


def test_tuned_threshold_is_the_best_cut() -> None:
    rng = np.random.default_rng(1)
    for _ in range(100):
        _, gold = _random_case(rng)
        # Logits that lean towards the gold labels, with ties (rounded) to exercise tied cuts.
        logits = np.round(rng.normal(size=gold.shape) + 1.5 * gold, 1)
        threshold = tune_threshold(list(logits), list(gold.astype(np.int64)))
        probs = 1 / (1 + np.exp(-logits))

        def f1(t: float, probs: np.ndarray = probs, gold: np.ndarray = gold) -> float:
            return multi_label_metrics(probs >= t, gold)["micro_f1"]

        cuts = np.unique(np.concatenate([probs.ravel(), [0.0, 1.0]]))
        best = max(f1(t) for t in np.concatenate([cuts, (cuts[1:] + cuts[:-1]) / 2]))
        assert f1(threshold) == pytest.approx(best)
        assert 0 < threshold < 1
    # Everything separable: the threshold falls between the classes, nearest 0.5 among ties.
    assert tune_threshold([np.array([2.0, -2.0])], [np.array([1, 0])]) == pytest.approx(0.5)


def test_tune_records_the_threshold_in_the_task() -> None:
    task = build_task("multi_label", {}, ["a", "b"])
    outputs = [np.array([0.0, -3.0]), np.array([-0.5, 1.0]), np.array([-3.0, -3.0])]
    gold = [np.array([1, 0]), np.array([1, 1]), np.array([0, 0])]
    assert task.metrics(outputs, gold)["micro_f1"] == pytest.approx(2 * 2 / (2 * 2 + 1))
    assert task.tune(outputs, gold)
    assert task.metrics(outputs, gold)["micro_f1"] == 1.0
    assert task.record()["options"]["threshold"] == task.options.threshold < 0.5
    fixed = build_task("multi_label", {"tune_threshold": False, "threshold": 0.7}, ["a", "b"])
    assert not fixed.tune(outputs, gold) and fixed.options.threshold == 0.7


def test_predictions_read_back_and_divergence(tmp_path: Path) -> None:
    task = build_task("multi_label", {"threshold": 0.5}, ["x", "y", "z"])
    data = read_multi_label_tsv(write(tmp_path / "p.tsv", "text_a\ttext_b\none\ttwo\nthree\tfour\n"),
                                require_labels=False)  # fmt: skip
    outputs = [np.array([1.0, -1.0, 2.0]), np.array([-1.0, -1.0, -1.0])]
    lines = task.prediction_lines(outputs, data)
    assert lines == ["labels\ttext_a\ttext_b", "x,z\tone\ttwo", "\tthree\tfour"]
    again = task.read(write(tmp_path / "back.tsv", "\n".join(lines) + "\n"))
    assert again.labels == [["x", "z"], []] and again.texts_b == ["two", "four"]
    assert task.divergence(outputs, outputs) == pytest.approx(0.0, abs=1e-12)
    assert task.divergence(outputs, [o + 1 for o in outputs]) > 0


# --- end to end ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("base")
    (root / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    torch.manual_seed(0)
    model = pretrainkit.build_model("bert-tiny", {**TINY, "targets": [{"name": "mlm"}]})
    model.tokenizer = load_tokenizer(root / "vocab.txt")
    return model.save(root / "model")


def test_command_line_finetune_evaluate_predict(base: Path, tmp_path: Path, capsys) -> None:
    train, dev, test = tmp_path / "train.tsv", tmp_path / "dev.tsv", tmp_path / "test.tsv"
    SAMPLES["multi_label"].write(train, 96, 1)
    SAMPLES["multi_label"].write(dev, 32, 2)
    rows = dev.read_text().splitlines()[1:]
    test.write_text("text_a\n" + "".join(r.split("\t")[1] + "\n" for r in rows))
    code, out, err = invoke(
        capsys, "finetune", "--task", "multi_label", "--model", base, "--train", train, "--dev",
        dev, "--out", tmp_path / "run", "--steps", "40", "--lr", "3e-3", "--batch-size", "16",
        "--seq-length", "32", "--threshold", "0.4", "--no-tune-threshold", "--pooling", "max",
        "--precision", "fp32", "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    record = json.loads((tmp_path / "run" / "model" / "task.json").read_text())
    assert record["name"] == "multi_label" and record["labels"] == sorted(
        {"horse", "mouse", "fox", "farmer", "child", "owl"}
    )
    assert record["options"]["threshold"] == 0.4 and record["options"]["pooling"] == "max"
    code, out, err = invoke(capsys, "evaluate", "--model", tmp_path / "run", "--data", dev)
    assert code == 0, err
    scored = json.loads(out[out.index("{") :])
    assert set(scored) >= {"micro_f1", "macro_f1", "exact_match"} and scored["rows"] == 32
    code, _, err = invoke(capsys, "predict", "--model", tmp_path / "run", "--data", test,
                          "--out", tmp_path / "pred.tsv")  # fmt: skip
    assert code == 0, err
    predicted = read_multi_label_tsv(tmp_path / "pred.tsv", record["labels"])
    assert predicted.texts_a == [r.split("\t")[1] for r in rows]
    # The flag of another task is refused, naming this task's options.
    code, _, err = invoke(
        capsys, "finetune", "--task", "multi_label", "--model", base, "--train", train,
        "--out", tmp_path / "bad", "--steps", "1", "--label-words", "0:a,1:b",
    )  # fmt: skip
    assert code == 2 and "does not apply to task 'multi_label'" in err


def test_unknown_dev_label_stops_before_training(base: Path, tmp_path: Path, capsys) -> None:
    train, dev = tmp_path / "train.tsv", tmp_path / "dev.tsv"
    SAMPLES["multi_label"].write(train, 16, 1)
    dev.write_text("labels\ttext_a\nhorse\tthe big horse .\ncat\tthe cat .\n")
    code, _, err = invoke(
        capsys, "finetune", "--task", "multi_label", "--model", base, "--train", train, "--dev",
        dev, "--out", tmp_path / "run", "--steps", "1",
    )  # fmt: skip
    assert code == 2 and "dev.tsv:3: label 'cat' is not one of the training labels" in err
    assert not (tmp_path / "run").exists()


def test_random_rows_survive_a_prediction_round_trip(tmp_path: Path) -> None:
    rng = random.Random(0)
    labels = ["a", "b", "c", "d"]
    task = build_task("multi_label", {}, labels)
    texts = [
        " ".join(rng.choice(["x", "y", "z"]) for _ in range(rng.randint(1, 4))) for _ in range(50)
    ]
    data = read_multi_label_tsv(write(tmp_path / "t.tsv", "text_a\n" + "\n".join(texts) + "\n"),
                                require_labels=False)  # fmt: skip
    outputs = [np.array([rng.uniform(-3, 3) for _ in labels]) for _ in texts]
    back = task.read(
        write(tmp_path / "p.tsv", "\n".join(task.prediction_lines(outputs, data)) + "\n")
    )
    expected = [[label for label, v in zip(labels, o) if v >= 0] for o in outputs]
    assert back.labels == expected and back.texts_a == texts


def test_finetune_with_dev_records_the_tuned_threshold(base: Path, tmp_path: Path) -> None:
    train, dev = tmp_path / "train.tsv", tmp_path / "dev.tsv"
    SAMPLES["multi_label"].write(train, 96, 1)
    SAMPLES["multi_label"].write(dev, 32, 2)
    options = {"steps": 30, "lr": 3e-3, "precision": "fp32", "progress": False}
    result = finetune("multi_label", base, train, dev, tmp_path / "run", options, batch_size=16,
                      task_options={"seq_length": 32})  # fmt: skip
    folder = tmp_path / "run" / "model"
    threshold = json.loads((folder / "task.json").read_text())["options"]["threshold"]
    model = pretrainkit.load(folder)
    spec = task_of(model)
    data = spec.read(dev)
    best = tune_threshold(model_outputs(model, spec, data), spec.gold(data))
    assert threshold == pytest.approx(best) and threshold != 0.5
    assert evaluate(folder, dev)["micro_f1"] == pytest.approx(result["last_eval"]["micro_f1"])
