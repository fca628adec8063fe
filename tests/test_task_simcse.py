"""``simcse``: the reader's two kinds of file, the InfoNCE loss against a hand computation, the
two dropout views, and finetune → evaluate → predict on the command line."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import task_samples  # noqa: F401 - loads sample_simcse without a circular import
import torch
from helpers import invoke, read_metrics
from samp_helpers import TINY, VOCAB, WORDS
from sample_simcse import write_simcse

import pretrainkit
from pretrainkit.errors import ConfigError, DataError
from pretrainkit.targets.contrastive import ContrastiveTarget, info_nce
from pretrainkit.tasks import build_task
from pretrainkit.tasks.simcse import read_simcse_file, two_views
from pretrainkit.tokenization import load_tokenizer


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("base")
    (root / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    torch.manual_seed(0)
    model = pretrainkit.build_model("bert-tiny", {**TINY, "targets": [{"name": "mlm"}]})
    model.tokenizer = load_tokenizer(root / "vocab.txt")
    return model.save(root / "model")


# -- reading -------------------------------------------------------------------------------


def test_reads_sentences_skipping_blank_lines(tmp_path: Path, caplog) -> None:
    path = tmp_path / "s.txt"
    path.write_text("the big horse .\n\n  \nthe red fox .\r\n")
    with caplog.at_level("INFO"):
        data = read_simcse_file(path)
    assert data.sentences == ["the big horse .", "the red fox ."] and data.pairs is None
    assert len(data) == 2 and "2 blank lines skipped" in caplog.text


def test_reads_pair_files(tmp_path: Path) -> None:
    tsv, csv = tmp_path / "p.tsv", tmp_path / "p.csv"
    tsv.write_text("label\ttext_a\ttext_b\n4.0\tthe fox\tthe owl\n1\tthe owl\tthe horse\n")
    csv.write_text('a,b,1\n"a, b",c,2.5\n')
    data = read_simcse_file(tsv)
    assert len(data) == 2 and data.sentences == ["the fox", "the owl", "the horse"]
    assert build_task("simcse").gold(data) == [4.0, 1.0]
    data = read_simcse_file(csv)  # STS-B CSV: sentence1,sentence2,score
    assert data.pairs is not None and data.pairs.texts_a == ["a", "a, b"]
    assert build_task("simcse").gold(data) == [1.0, 2.5]
    headerless = tmp_path / "h.txt"
    headerless.write_text("the fox\tthe owl\t3\n")
    data = read_simcse_file(headerless, columns=("text_a", "text_b", "label"))
    assert build_task("simcse").gold(data) == [3.0]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("s.txt", "one .\ntwo\tthree\n", "s.txt:2: a tab in a plain sentence file"),
        ("s.txt", "\n \n", "s.txt: no sentences"),
        ("p.tsv", "label\ttext_a\ttext_b\n4\ta\tb\nhigh\ta\tb\n", "p.tsv:3: score 'high'"),
        ("p.tsv", "label\ttext_a\n2\ta\n", "p.tsv: a pair file needs two sentences"),
        ("p.csv", "a,b,1\na,b\n", "p.csv:2: expected 3 comma-separated fields"),
    ],
)
def test_bad_input_names_file_and_line(tmp_path: Path, name: str, text: str, message: str):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError, match=message.replace("(", r"\(")):
        read_simcse_file(path)


def test_sentence_file_cannot_be_scored(tmp_path: Path) -> None:
    path = tmp_path / "s.txt"
    path.write_text("one .\ntwo .\n")
    task = build_task("simcse")
    with pytest.raises(DataError, match="s.txt: is a plain sentence file"):
        task.gold(task.read(path))


def test_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="pooling"):
        build_task("simcse", {"pooling": "first"})
    with pytest.raises(ConfigError, match="temperature"):
        build_task("simcse", {"temperature": 0.0})


# -- the loss --------------------------------------------------------------------------------


def test_info_nce_matches_a_hand_computation() -> None:
    anchors = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    candidates = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    tau = 0.5
    loss, logits = info_nce(anchors, candidates, torch.tensor([0, 1]), tau)
    s = 1 / math.sqrt(2)  # cos 45 degrees
    expected_logits = [[1 / tau, 0.0], [s / tau, s / tau]]
    assert torch.allclose(logits, torch.tensor(expected_logits))
    row0 = -math.log(math.exp(2.0) / (math.exp(2.0) + math.exp(0.0)))
    row1 = -math.log(0.5)  # two equal logits
    assert loss.item() == pytest.approx((row0 + row1) / 2, rel=1e-6)


def test_target_reads_anchors_then_candidates() -> None:
    torch.manual_seed(0)
    hidden = torch.randn(6, 4, 8)  # [2b + 2 hard negatives, s, h] with b = 2
    mask = torch.ones(6, 4, dtype=torch.int64)
    mask[1, 2:] = 0
    target = ContrastiveTarget(8, pooling="mean", temperature=0.1)
    out = target(hidden, mask, torch.tensor([0, 1]))
    assert torch.allclose(out.logits[1], hidden[1, :2].mean(0))  # padding left out
    expected, _ = info_nce(out.logits[:2], out.logits[2:], torch.tensor([0, 1]), 0.1)
    assert out.loss is not None and torch.equal(out.loss, expected)
    assert target(hidden, mask, None).loss is None  # evaluation: the embeddings only
    cls = ContrastiveTarget(8, pooling="cls")(hidden, mask, None).logits
    assert torch.equal(cls, hidden[:, 0])
    with pytest.raises(ValueError, match="fewer anchors"):
        target(hidden, mask, torch.arange(6))


def test_two_views_differ_only_through_dropout(base: Path) -> None:
    """The collated copies are the same tokens; without dropout (eval) their embeddings are
    equal, so the positives' logit is 1/tau, the largest possible, and the loss is that of
    identical views; in training mode dropout makes them differ."""
    tokenizer = pretrainkit.load(base).tokenizer
    texts = ["the big horse sees the red fox .", "the owl .", "the happy child feeds the owl ."]
    instances = [
        {"input_ids": np.asarray(tokenizer.build_inputs(ids)[0])}
        for ids in tokenizer.encode_batch(texts)
    ]
    batch = two_views(instances, tokenizer.pad_id)
    assert torch.equal(batch["input_ids"][:3], batch["input_ids"][3:])
    assert torch.equal(batch["labels"], torch.arange(3))
    task = build_task("simcse", {"temperature": 0.05})
    from pretrainkit.workflows.finetune import task_model

    model = task_model(pretrainkit.load(base), task)
    torch.manual_seed(0)
    with torch.no_grad():
        model.eval()
        same = model(**batch)
        model.train()
        dropped = model(**batch)
    assert torch.allclose(same.logits[:3], same.logits[3:])
    anchors, candidates = same.logits[:3], same.logits[3:]
    _, logits = info_nce(anchors, candidates, batch["labels"], 0.05)
    assert torch.allclose(logits.diagonal(), torch.full((3,), 20.0), atol=1e-4)
    assert torch.equal(logits.argmax(1), torch.arange(3))  # each positive the row's best
    assert not torch.allclose(dropped.logits[:3], dropped.logits[3:])
    _, noisy = info_nce(dropped.logits[:3], dropped.logits[3:], batch["labels"], 0.05)
    assert (noisy.diagonal() < 20.0 - 1e-3).all()  # the views disagree: positives below 1/tau


# -- end to end on the command line ------------------------------------------------------------


def test_finetune_evaluate_predict_and_embed(base: Path, tmp_path: Path, capsys) -> None:
    rng = random.Random(0)
    sentences = tmp_path / "sentences.txt"
    lines = [" ".join(rng.choice(WORDS) for _ in range(6)) + " ." for _ in range(200)]
    lines.insert(50, "")
    sentences.write_text("\n".join(lines) + "\n")
    pairs = tmp_path / "pairs.tsv"
    write_simcse(pairs, 40, 2)
    code, out, err = invoke(
        capsys, "finetune", "--task", "simcse", "--model", base, "--train", sentences,
        "--dev", pairs, "--out", tmp_path / "run", "--steps", "40", "--lr", "3e-3",
        "--batch-size", "16", "--seq-length", "32", "--log-every", "10",
        "--precision", "fp32", "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    records = read_metrics(tmp_path / "run")
    assert records[-1]["loss"] < 0.5 * records[0]["loss"], records  # the views are told apart
    folder = tmp_path / "run" / "model"
    assert json.loads((folder / "task.json").read_text())["options"]["temperature"] == 0.05
    code, out, err = invoke(capsys, "evaluate", "--model", folder, "--data", pairs)
    assert code == 0, err
    scored = json.loads(out[out.index("{") :])
    assert scored["rows"] == 40 and scored["spearman"] > 0.8
    predictions = tmp_path / "predictions.txt"
    code, _, err = invoke(
        capsys, "predict", "--model", folder, "--data", pairs, "--out", predictions
    )
    assert code == 0, err
    lines = predictions.read_text().splitlines()
    assert lines[0] == "score" and len(lines) == 41
    # The folder still embeds: encode's default (mean) pooling is the task's, so the predicted
    # score is the cosine of Model.encode's embeddings.
    model = pretrainkit.load(folder)
    data = build_task("simcse").read(pairs)
    assert data.pairs is not None and data.pairs.texts_b is not None
    a = model.encode(data.pairs.texts_a[:5])
    b = model.encode(data.pairs.texts_b[:5])
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert np.allclose(cosine, [float(x) for x in lines[1:6]], atol=1e-5)
    # A plain sentence file is no evaluation set.
    code, _, err = invoke(capsys, "evaluate", "--model", folder, "--data", sentences)
    assert code != 0 and "sentences.txt: is a plain sentence file" in err


def test_the_fine_tuned_model_embeds_with_its_pooling(base: Path) -> None:
    from pretrainkit.workflows.finetune import task_model

    pre = pretrainkit.load(base)
    pre.encode_defaults = {"normalize": True}  # e.g. a converted sentence-transformers folder
    model = task_model(pre, build_task("simcse", {"pooling": "cls"}))
    assert model.encode_defaults == {"normalize": True, "pooling": "cls"}
