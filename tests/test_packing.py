"""Packed training batches (``--pack``): the layout ``collate_packed`` builds, a packed batch
computing what the padded one computes (logits, losses, gradients) for each position scheme and
pooling, fine-tuning with ``--pack`` following the padded run, and where it is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import invoke, read_metrics, write_classification
from samp_helpers import TINY, VOCAB

import pretrainkit
from pretrainkit.data.batching import collate, collate_packed
from pretrainkit.tokenization import load_tokenizer

LENGTHS = [5, 17, 3, 30, 9, 12, 2, 25, 7, 14]


def examples(
    lengths=LENGTHS, seed: int = 0, token_labels: bool = False, segments: int = 2
) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for n in lengths:
        instance = {
            "input_ids": rng.integers(5, len(VOCAB), n),
            "token_type_ids": (np.arange(n) > n // 2).astype(np.int64) * (segments - 1),
        }
        if token_labels:
            instance["labels"] = rng.integers(0, 3, n)
        else:
            instance["labels"] = np.asarray(rng.integers(0, 2))
        out.append(instance)
    return out


def test_packed_layout_holds_every_example_once_with_its_own_positions():
    batch = collate_packed(examples(), pad_id=0, capacity=40)
    rows, width = batch["input_ids"].shape
    assert width <= 40 and rows == 4  # 124 tokens in rows of 40: first-fit decreasing needs 4
    padded = collate(examples(), pad_id=0)
    assert batch["input_ids"].numel() == 4 * 39 < padded["input_ids"].numel() == 10 * 30
    flat = {k: batch[k].reshape(-1) for k in ("input_ids", "token_type_ids", "position_ids")}
    ids = batch["example_ids"].reshape(-1)
    for i, instance in enumerate(examples()):
        n = len(instance["input_ids"])
        index = batch["unpack_index"][i]
        assert (index[:n] >= 0).all() and (index[n:] == -1).all()
        assert flat["input_ids"][index[:n]].tolist() == instance["input_ids"].tolist()
        assert flat["token_type_ids"][index[:n]].tolist() == instance["token_type_ids"].tolist()
        assert flat["position_ids"][index[:n]].tolist() == list(range(n))
        assert (ids[index[:n]] == i).all() and int((ids == i).sum()) == n
    assert batch["labels"].tolist() == [int(x["labels"]) for x in examples()]
    assert (batch["attention_mask"] == (batch["example_ids"] >= 0)).all()
    assert int(batch["attention_mask"].sum()) == sum(LENGTHS)
    # A capacity below the longest example is raised to it; one example alone fills one row.
    alone = collate_packed(examples([30]), pad_id=0, capacity=8)
    assert alone["input_ids"].shape == (1, 30)
    # By default rows are as wide as the longest example: the padded batch with fewer rows.
    default = collate_packed(examples(), pad_id=0)
    assert default["input_ids"].shape == (5, 30)
    assert int(default["attention_mask"].sum()) == sum(LENGTHS)


def model(preset: str, pooling: str, target: str = "classification") -> pretrainkit.Model:
    torch.manual_seed(0)
    options = {"pooling": pooling, "dropout": 0.0}
    if target == "classification":
        options["labels"] = ["a", "b"]
    if target in ("token_classification", "crf"):
        options = {"labels": ["O", "B-X", "I-X"]}
    if target == "regression":
        options = {"pooling": pooling, "dropout": 0.0}
    shape = {**TINY, "targets": [{"name": target, "options": options}]}
    if preset != "llama":
        shape |= {
            "embedding.dropout": 0.0,
            "encoder.dropout": 0.0,
            "encoder.attention_dropout": 0.0,
        }
    return pretrainkit.build_model(preset, shape)


@pytest.mark.parametrize(
    ("preset", "pooling"),
    [
        ("bert-tiny", "first"),
        ("bert-tiny", "mean"),
        ("bert-tiny", "max"),
        ("bert-tiny", "last"),
        ("roberta-base", "mean"),  # positions offset past the padding id
        ("llama", "last"),  # rotary positions, causal within each example
    ],
)
def test_a_packed_batch_computes_what_the_padded_one_does(preset, pooling):
    net = model(preset, pooling)
    rows = examples(segments=net.config.embedding.num_segments or 1)
    padded, packed = collate(rows, 0), collate_packed(rows, 0, capacity=40)
    net.eval()
    with torch.no_grad():
        a, b = net(**padded), net(**packed)
    torch.testing.assert_close(b.logits, a.logits, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(b.loss, a.loss, atol=2e-6, rtol=1e-6)
    # Training mode without dropout: the same gradients for every parameter.
    net.train()
    grads = []
    for batch in (padded, packed):
        net.zero_grad()
        net(**batch).loss.backward()
        grads.append({k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_regression_scores_stay_float_and_match():
    net = model("bert-tiny", "mean", target="regression").eval()
    rows = examples()
    for i, row in enumerate(rows):
        row["labels"] = np.asarray(0.5 * i, dtype=np.float32)
    padded, packed = collate(rows, 0), collate_packed(rows, 0, capacity=40)
    assert packed["labels"].dtype == torch.float32
    with torch.no_grad():
        a, b = net(**padded), net(**packed)
    torch.testing.assert_close(b.logits, a.logits, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(b.loss, a.loss, atol=1e-5, rtol=1e-6)


@pytest.mark.parametrize("target", ["token_classification", "crf"])
def test_per_token_labels_stay_one_row_per_example(target):
    net = model("bert-tiny", "mean", target=target).eval()
    padded = collate(examples(token_labels=True), 0)
    packed = collate_packed(examples(token_labels=True), 0, capacity=40)
    assert packed["labels"].shape == padded["labels"].shape  # [n, longest], -100 past each end
    with torch.no_grad():
        a, b = net(**padded), net(**packed)
    keep = padded["attention_mask"].bool()
    torch.testing.assert_close(b.logits[keep], a.logits[keep], atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(b.loss, a.loss, atol=2e-6, rtol=1e-6)


def tiny_base(root, encoder: dict | None = None):
    root.mkdir(exist_ok=True)
    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n")
    torch.manual_seed(0)
    overrides = {
        **TINY,
        "embedding.dropout": 0.0,
        "encoder.dropout": 0.0,
        "encoder.attention_dropout": 0.0,
        "targets": [{"name": "mlm"}],
    }
    if encoder is not None:
        overrides = {
            "hidden_size": 64,
            "vocab_size": len(VOCAB),
            "embedding": {"parts": ["word"], "max_positions": 64, "dropout": 0.0},
            "encoder": encoder,
            "targets": [{"name": "mlm"}],
        }
    base = pretrainkit.build_model("bert-tiny", overrides)
    base.tokenizer = load_tokenizer(vocab)
    base.save(root / "base")
    return root / "base"


def finetune(capsys, base, train, dev, out, *extra):
    return invoke(
        capsys, "finetune", "--task", "classification", "--model", base, "--train", train,
        "--dev", dev, "--out", out, "--steps", "40", "--batch-size", "16", "--seq-length", "48",
        "--dropout", "0", "--lr", "3e-3", "--warmup", "2", "--precision", "fp32",
        "--eval-every", "40", "--no-progress", *extra,
    )  # fmt: skip


def test_finetune_with_pack_follows_the_padded_run(tmp_path, capsys):
    base = tiny_base(tmp_path)
    write_classification(tmp_path / "train.tsv", 160, seed=1)
    write_classification(tmp_path / "dev.tsv", 64, seed=2)
    runs = {}
    for name, extra in (("padded", ()), ("packed", ("--pack",))):
        code, _, err = finetune(
            capsys, base, tmp_path / "train.tsv", tmp_path / "dev.tsv", tmp_path / name, *extra
        )
        assert code == 0, err
        runs[name] = read_metrics(tmp_path / name)
    losses = {k: [r["loss"] for r in v] for k, v in runs.items()}
    assert losses["packed"] == pytest.approx(losses["padded"], abs=1e-4)
    assert losses["packed"][-1] < losses["packed"][0] - 0.1  # and it learns
    task = json.loads((tmp_path / "packed" / "model" / "task.json").read_text())
    assert task["options"]["pack"] is True
    code, out, err = invoke(
        capsys, "evaluate", "--model", tmp_path / "packed" / "model", "--data", tmp_path / "dev.tsv"
    )
    assert code == 0, err
    packed_accuracy = json.loads(out[out.index("{") :])["accuracy"]
    code, out, err = invoke(
        capsys, "evaluate", "--model", tmp_path / "padded" / "model", "--data", tmp_path / "dev.tsv"
    )
    assert packed_accuracy == pytest.approx(json.loads(out[out.index("{") :])["accuracy"])
    assert packed_accuracy > 0.8
    # A teacher fine-tuned with --pack is distilled from padded batches (the distiller runs
    # the slots itself); the student's task records that.
    teacher = tmp_path / "packed" / "model"
    code, _, err = invoke(
        capsys, "distill", "--teacher", teacher, "--student", teacher, "--student-layers", "1",
        "--recipe", "task", "--data", tmp_path / "train.tsv", "--out", tmp_path / "student",
        "--steps", "2", "--batch-size", "8", "--precision", "fp32", "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    student = json.loads((tmp_path / "student" / "model" / "task.json").read_text())
    assert student["options"]["pack"] is False


def test_pack_must_be_a_boolean():
    from pretrainkit.errors import ConfigError
    from pretrainkit.tasks import build_task

    with pytest.raises(ConfigError, match=r"task tagging.pack: expected true or false, got 'yes'"):
        build_task("tagging", {"pack": "yes"})
    assert build_task("regression", {"pack": True}).options.pack is True


def test_pack_is_refused_where_it_cannot_hold(tmp_path, capsys):
    write_classification(tmp_path / "train.tsv", 32, seed=1)
    train = tmp_path / "train.tsv"
    base = tiny_base(tmp_path)
    # A task whose batches are not one sequence per example has no --pack.
    code, _, err = invoke(
        capsys, "finetune", "--task", "multiple_choice", "--model", base, "--train", train,
        "--out", tmp_path / "mc", "--steps", "1", "--pack",
    )  # fmt: skip
    assert code != 0 and "--pack does not apply to task 'multiple_choice'" in err
    # Perturbed training runs the embedding itself.
    code, _, err = finetune(
        capsys, base, train, train, tmp_path / "fgm", "--pack", "--adversarial", "fgm"
    )
    assert code != 0 and "--pack cannot be combined with perturbed training" in err
    assert not (tmp_path / "fgm").exists()
    # A recurrent stack has no per-example attention.
    lstm = tiny_base(tmp_path / "lstm", {"name": "lstm", "num_layers": 1, "dropout": 0.0})
    code, _, err = finetune(capsys, lstm, train, train, tmp_path / "rnn", "--pack")
    assert code != 0 and "--pack needs a transformer encoder" in err
    assert not (tmp_path / "rnn").exists()


def _tagging(path, rows, seed):
    from sample_tagging import write_tagging

    write_tagging(path, rows, seed)


def _regression(path, rows, seed):
    from task_samples import SAMPLES

    SAMPLES["regression"].write(path, rows, seed)


@pytest.mark.parametrize(
    ("name", "options", "write"),
    [
        ("classification", {"pooling": "mean"}, lambda p, r, s: write_classification(p, r, s)),
        ("classification", {"pooling": "first"}, lambda p, r, s: write_classification(p, r, s, pairs=True)),
        ("regression", {"pooling": "mean"}, _regression),
        ("tagging", {"crf": False}, _tagging),
        ("tagging", {"crf": True}, _tagging),
    ],
)  # fmt: skip
def test_evaluation_of_a_packed_task_packs_and_gives_the_padded_outputs(
    tmp_path, name, options, write
):
    """A task that packs its training batches also packs its evaluation and prediction
    batches: fewer rows, the same examples in the same order, the same outputs."""
    from pretrainkit.tasks import build_task
    from pretrainkit.workflows.finetune import model_outputs

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n")
    tokenizer = load_tokenizer(vocab)
    write(tmp_path / "dev.tsv", 45, 3)
    # Every third row cut to two words (the tags with them): rows of mixed length, as real
    # files have; same-length rows leave nothing to pack into rows as wide as the longest.
    lines = (tmp_path / "dev.tsv").read_text().splitlines()
    for i in range(1, len(lines), 3):
        fields = lines[i].split("\t")
        for c in range(len(fields)) if name == "tagging" else range(1, len(fields)):
            fields[c] = " ".join(fields[c].split()[:2])
        lines[i] = "\t".join(fields)
    (tmp_path / "dev.tsv").write_text("\n".join(lines) + "\n")
    tasks = {
        pack: build_task(name, {**options, "seq_length": 40, "dropout": 0.0, "pack": pack})
        for pack in (False, True)
    }
    data = tasks[False].read(tmp_path / "dev.tsv")
    for task in tasks.values():
        task.fit_labels(data)
    target = tasks[False].target()
    torch.manual_seed(0)
    net = pretrainkit.build_model(
        "bert-tiny", {**TINY, "targets": [{"name": target.name, "options": target.options}]}
    )
    net.tokenizer = tokenizer
    padded = list(tasks[False].eval_batches(data, tokenizer, 16))
    packed = list(tasks[True].eval_batches(data, tokenizer, 16))
    assert [len(b["unpack_index"]) for b in packed] == [len(b["input_ids"]) for b in padded]
    assert sum(len(b["input_ids"]) for b in packed) < sum(len(b["input_ids"]) for b in padded)
    assert "example_ids" not in padded[0] and "example_ids" in packed[0]
    outputs = {pack: model_outputs(net, task, data, 16) for pack, task in tasks.items()}
    assert len(outputs[True]) == len(outputs[False]) == len(data) == 45
    for a, b in zip(outputs[False], outputs[True], strict=True):
        np.testing.assert_allclose(b, a, atol=2e-5, rtol=1e-5)
    gold = tasks[False].gold(data)
    assert tasks[True].metrics(outputs[True], gold) == pytest.approx(
        tasks[False].metrics(outputs[False], gold)
    )
    lines = {pack: task.prediction_lines(outputs[pack], data) for pack, task in tasks.items()}
    assert lines[True] == lines[False]


def test_packing_an_evaluation_batch_refuses_what_it_cannot_place():
    from pretrainkit.data.batching import pack_padded
    from pretrainkit.errors import ConfigError

    batch = collate(examples([3, 5]), 0)
    packed = pack_padded({**batch, "_rows": [7, 8]}, 0)
    assert packed["_rows"] == [7, 8] and packed["input_ids"].shape == (2, 5)
    with pytest.raises(ConfigError, match="needs its attention_mask"):
        pack_padded({"input_ids": batch["input_ids"]}, 0)
    left = {**batch, "attention_mask": batch["attention_mask"].flip(1)}
    with pytest.raises(ConfigError, match="needs right padding"):
        pack_padded(left, 0)
    with pytest.raises(ConfigError, match=r"has \['example_ids', 'position_ids'"):
        pack_padded(collate_packed(examples([3, 5]), 0), 0)
