"""Every registered task, end to end on a tiny file: read → train → evaluate → predict → save →
reload → the same predictions; and the seams that keep tasks plug-ins."""

from __future__ import annotations

import ast
import json
import re
import statistics
from pathlib import Path

import pytest
import torch
from helpers import invoke
from objective_samples import SAMPLES as OBJECTIVE_SAMPLES
from samp_helpers import TINY, VOCAB
from task_samples import SAMPLES

import pretrainkit
from pretrainkit.tasks import TASKS, build_task, task_of
from pretrainkit.tokenization import load_tokenizer
from pretrainkit.workflows.finetune import evaluate, finetune, predict

SRC = Path(__file__).resolve().parents[1] / "src" / "pretrainkit"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny encoder (2 layers, hidden 64) with a word-level vocabulary, not pre-trained."""
    root = tmp_path_factory.mktemp("base")
    (root / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    torch.manual_seed(0)
    model = pretrainkit.build_model("bert-tiny", {**TINY, "targets": [{"name": "mlm"}]})
    model.tokenizer = load_tokenizer(root / "vocab.txt")
    return model.save(root / "model")


def test_every_task_has_a_sample() -> None:
    assert sorted(SAMPLES) == TASKS.names()


@pytest.mark.parametrize("name", TASKS.names())
def test_task_end_to_end(name: str, base: Path, tmp_path: Path, capsys) -> None:
    sample = SAMPLES[name]
    train, dev = tmp_path / f"train{sample.suffix}", tmp_path / f"dev{sample.suffix}"
    sample.write(train, 192, 1)
    sample.write(dev, 48, 2)
    if sample.base is not None:  # a task that needs another kind of model brings its own
        base = sample.base(tmp_path / "base")
    options = {"steps": sample.steps, "lr": 3e-3, "warmup": 5, "log_every": 10}
    # seq_length 32, for the tasks that take one (image_classification refuses it).
    length = {"seq_length": 32} if build_task(name).options.seq_length is not None else {}
    result = finetune(name, base, train, dev, tmp_path / "run",
                      {**options, "precision": "fp32", "progress": False}, batch_size=16,
                      task_options={**length, **sample.options})  # fmt: skip
    folder = tmp_path / "run" / "model"
    record = json.loads((folder / "task.json").read_text())
    assert record["name"] == name and record["options"]["seq_length"] == length.get("seq_length")
    task = build_task(name)
    first = task.metric_names[0]
    assert result["last_eval"][first] > sample.threshold, result["last_eval"]
    # evaluate rebuilds the task from the folder and gives the trainer's last evaluation.
    scored = evaluate(folder, dev)
    assert scored["task"] == name and scored["rows"] == sample.rows(dev)
    for metric in task.metric_names:
        assert scored[metric] == pytest.approx(result["last_eval"][metric], abs=1e-6)
    # predict, then the same after a reload and after another save.
    first_file = predict(folder, dev, tmp_path / "p1.txt")
    lines = first_file.read_text().splitlines()
    assert len(lines) == 1 + sample.prediction_rows(dev)
    model = pretrainkit.load(folder)
    assert task_of(model).record() == record
    model.save(tmp_path / "copy")
    predict(tmp_path / "copy", dev, tmp_path / "p2.txt")
    assert (tmp_path / "p2.txt").read_text() == first_file.read_text()
    # The command line goes through the same path.
    code, out, err = invoke(capsys, "evaluate", "--model", folder, "--data", dev)
    assert code == 0, err
    assert json.loads(out[out.index("{") :])[first] == pytest.approx(scored[first], abs=1e-6)


def test_task_options_belong_to_their_task(base: Path, tmp_path: Path, capsys) -> None:
    train = tmp_path / "train.tsv"
    SAMPLES["regression"].write(train, 16, 1)
    code, _, err = invoke(
        capsys, "finetune", "--task", "regression", "--model", base, "--train", train, "--out",
        tmp_path / "run", "--steps", "1", "--pooling", "sum",
    )  # fmt: skip
    assert code == 2 and "pooling must be one of first, mean, max, last" in err
    assert not (tmp_path / "run").exists()


def test_folds_report_mean_and_std(base: Path, tmp_path: Path, capsys) -> None:
    train = tmp_path / "train.tsv"
    SAMPLES["classification"].write(train, 60, 3)
    code, out, err = invoke(
        capsys, "finetune", "--model", base, "--train", train, "--out", tmp_path / "cv",
        "--folds", "3", "--steps", "20", "--lr", "3e-3", "--batch-size", "16", "--seq-length",
        "32", "--precision", "fp32", "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "cv" / "folds.json").read_text())
    values = [fold["accuracy"] for fold in report["folds"]]
    assert len(values) == 3
    assert report["accuracy"]["mean"] == pytest.approx(sum(values) / 3)
    assert report["accuracy"]["std"] == pytest.approx(statistics.stdev(values), abs=1e-12)
    runs = sorted(p.name for p in (tmp_path / "cv").iterdir())
    assert runs == ["fold-1", "fold-2", "fold-3", "folds.json"]
    # Each fold trained on 40 rows and was scored on its 20 held-out ones.
    assert json.loads((tmp_path / "cv" / "fold-1" / "run.json").read_text())["rows"] == 40


def test_defaults_follow_the_model_width(base: Path, tmp_path: Path) -> None:
    train = tmp_path / "train.tsv"
    SAMPLES["classification"].write(train, 40, 1)
    finetune("classification", base, train, None, tmp_path / "run", {"progress": False},
             batch_size=8, epochs=2.0)  # fmt: skip
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert (run["steps"], run["lr"], run["warmup"]) == (10, 3e-4, 1)  # hidden 64: a small model


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_workflows_cli_and_samp_name_no_task() -> None:
    """Adding a task touches no workflow, CLI or SAMP file: none of them imports a task's own
    module or compares a task name."""
    files = [SRC / "workflows" / "finetune.py", SRC / "cli" / "commands.py",
             SRC / "cli" / "samp_commands.py", *sorted((SRC / "samp").glob("*.py"))]  # fmt: skip
    task_modules = {f"pretrainkit.tasks.{n}" for n in TASKS.names()}
    for path in files:
        assert not (_imports(path) & task_modules), path
        text = path.read_text()
        for name in TASKS.names():
            compared = rf'([!=]=|\bin\b)\s*[(\[{{]?\s*"{name}"|"{name}"\s*[!=]='
            assert not re.search(compared, text), (path, name)


def test_model_imports_nothing_above_it() -> None:
    banned = ("pretrainkit.workflows", "pretrainkit.samp", "pretrainkit.tasks", "pretrainkit.cli")
    assert not any(m.startswith(banned) for m in _imports(SRC / "model.py"))


def test_every_objective_has_a_model() -> None:
    from pretrainkit.data.objectives import OBJECTIVES

    assert sorted(OBJECTIVE_SAMPLES) == OBJECTIVES.names()


@pytest.mark.parametrize("name", sorted(OBJECTIVE_SAMPLES))
def test_objective_end_to_end(name: str, tmp_path: Path) -> None:
    """preprocess → pretrain (loss falls) → the saved model reloads with the same loss."""
    from pretrainkit.data import BatchIterator, Shards, pretraining_stream
    from pretrainkit.data.objectives import get_objective
    from pretrainkit.data.preprocessing import preprocess
    from pretrainkit.tokenization import train_tokenizer
    from pretrainkit.training import TrainConfig
    from pretrainkit.workflows.pretrain import pretrain

    objective = get_objective(name)
    sample = OBJECTIVE_SAMPLES[name]
    corpus = sample.write_corpus(tmp_path)
    vocab_text = sample.vocab_corpus(tmp_path) if sample.vocab_corpus else corpus
    train_tokenizer([vocab_text], "wordpiece", 200, tmp_path / "tok")
    preprocess(
        [corpus], tmp_path / "tok", name, sample.seq_length, tmp_path / "shards",
        log=lambda _: None, objective_options=sample.objective_options,
    )  # fmt: skip
    targets = [{"name": t} for t in sorted(objective.targets)]
    model_overrides = {**TINY_BODY, **sample.overrides, "targets": targets}
    config = TrainConfig(steps=40, lr=1e-3, log_every=5, precision="fp32", progress=False)
    result = pretrain(
        sample.preset, tmp_path / "shards", tmp_path / "run", config, 8, model_overrides
    )
    losses = [json.loads(line)["loss"] for line in
              (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]  # fmt: skip
    assert losses[-1] < sample.loss_ratio * losses[0], losses
    shards = Shards.open(tmp_path / "shards")
    stream = pretraining_stream(shards, seed=7)
    batch = BatchIterator(stream, 4, shards.tokenizer.pad_id, objective.collate).next_batch()
    model = pretrainkit.load(result["model_dir"]).eval()
    again = pretrainkit.load(tmp_path / "run").eval()  # the run folder loads its model/
    with torch.no_grad():
        assert torch.equal(model(**batch).loss, again(**batch).loss)
    assert set(model.targets) == set(objective.targets)


TINY_BODY = {
    "hidden_size": 64,
    "encoder.num_heads": 2,
    "encoder.ffn_size": 128,
    "embedding.max_positions": 64,
}
