"""``multiple_choice``: the C3 reader and its errors, the target's loss, the training stream (one
question per instance), its collate and evaluation batches, the command line, --epochs and
--batch-size in questions, ChID-style data, and the real C3 dev file."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import PAIRS, data_dir, invoke, last_json
from samp_helpers import TINY, VOCAB
from task_samples import SAMPLES

import pretrainkit
from pretrainkit.data import BatchIterator
from pretrainkit.errors import ConfigError, DataError
from pretrainkit.targets.multiple_choice import PADDING_CHOICE, MultipleChoiceTarget
from pretrainkit.tasks import build_task
from pretrainkit.tasks.c3_format import read_c3
from pretrainkit.tasks.multiple_choice import (
    MultipleChoiceStream,
    collate_questions,
    multiple_choice_batches,
)
from pretrainkit.tokenization import Tokenizer, load_tokenizer
from pretrainkit.workflows.finetune import finetune, predict

DOCUMENTS = [
    [["the big horse sees the small mouse .", "it was good ."], [
        {"question": "the red fox", "choice": ["fox", "owl"], "answer": "owl"},
        {"question": "the old farmer", "choice": ["child", "farmer", "owl", "farmer"],
         "answer": "farmer"},
    ], "d-1"],
    [[], [{"question": "the quiet owl", "choice": ["owl", "mouse", "fox"], "answer": "owl",
           "id": "own"}], 7],
]  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    vocab = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n")
    return load_tokenizer(vocab)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, tokenizer: Tokenizer) -> Path:
    """A tiny encoder (2 layers, hidden 64), not pre-trained."""
    torch.manual_seed(0)
    model = pretrainkit.build_model("bert-tiny", {**TINY, "targets": [{"name": "mlm"}]})
    model.tokenizer = tokenizer
    return model.save(tmp_path_factory.mktemp("base") / "model")


def write_json(path: Path, documents: object) -> Path:
    path.write_text(json.dumps(documents), encoding="utf-8")
    return path


# -- reading ---------------------------------------------------------------------------------


def test_reader_keeps_one_entry_per_question(tmp_path: Path) -> None:
    data = read_c3(write_json(tmp_path / "c3.json", DOCUMENTS), num_choices=4)
    assert len(data) == 3
    assert data.ids == ["d-1-1", "d-1-2", "own"]  # the question's own id wins
    assert data.contexts[0] == "the big horse sees the small mouse . it was good ."
    assert data.contexts[2] == ""
    assert data.questions[1] == "the old farmer"
    assert data.choices[0] == ["fox", "owl"]
    # A repeated choice: the first one is the answer (identical sequences score alike).
    assert data.answers == [1, 1, 0]


def test_reader_without_answers(tmp_path: Path) -> None:
    documents = json.loads(json.dumps(DOCUMENTS))
    del documents[0][1][0]["answer"]
    path = write_json(tmp_path / "c3.json", documents)
    assert read_c3(path, 4, require_labels=False).answers is None
    with pytest.raises(DataError, match=r"document 1 \(id 'd-1'\), question 1: no answer"):
        read_c3(path, 4)


def _broken(change: str) -> object:
    documents = json.loads(json.dumps(DOCUMENTS))
    first = documents[0][1][0]
    if change == "not a list":
        return {"documents": documents}
    if change == "short document":
        documents[1] = documents[1][:2]
    elif change == "context":
        documents[0][0] = "one string"
    elif change == "questions":
        documents[0][1] = {"question": "?"}
    elif change == "question object":
        documents[0][1][0] = ["the red fox", ["fox", "owl"], "owl"]
    elif change == "choice list":
        first["choice"] = "fox owl"
    elif change == "one choice":
        first["choice"] = ["owl"]
    elif change == "five choices":
        first["choice"] = ["owl", "fox", "mouse", "child", "horse"]
    elif change == "answer":
        first["answer"] = "horse"
    elif change == "id":
        documents[0][2] = None
    elif change == "no questions":
        documents = [[["a"], [], "d-1"]]
    return documents


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("not a list", r"expected a JSON list of documents .* got a JSON dict"),
        ("short document", r"document 2: expected \[\[context sentences\], \[questions\], id\]"),
        ("context", r"document 1 \(id 'd-1'\): the context .* must be a list of strings"),
        ("questions", r"document 1 \(id 'd-1'\): the questions .* must be a list"),
        ("question object", r"document 1 \(id 'd-1'\), question 1: expected an object"),
        ("choice list", r"question 1: 'choice' must be a list of strings"),
        ("one choice", r"question 1: 1 choice\(s\); a question needs at least 2"),
        ("five choices", r"question 1: 5 choices, more than num_choices 4 \(raise --num-choices\)"),
        ("answer", r"question 1: the answer 'horse' is not one of the choices \['fox', 'owl'\]"),
        ("id", r"document 1: the id \(third item\) must be a string"),
        ("no questions", r"no questions"),
    ],
)
def test_bad_input_names_file_document_and_question(
    tmp_path: Path, change: str, message: str
) -> None:
    path = write_json(tmp_path / "bad.json", _broken(change))
    with pytest.raises(DataError, match=message) as error:
        read_c3(path, num_choices=4)
    assert str(error.value).startswith(f"{path}")


def test_bad_bytes_and_bad_json(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("[\n[],\n}")
    with pytest.raises(DataError, match=r"bad.json:3: not valid JSON"):
        read_c3(tmp_path / "bad.json", 4)
    (tmp_path / "latin.json").write_bytes(b'[["caf\xe9"]]')
    with pytest.raises(DataError, match=r"latin.json: not UTF-8"):
        read_c3(tmp_path / "latin.json", 4)
    with pytest.raises(ConfigError, match="no columns"):
        build_task("multiple_choice").read(tmp_path / "latin.json", columns=["text_a"])


def test_subset_keeps_whole_questions(tmp_path: Path) -> None:
    task = build_task("multiple_choice")
    data = task.read(write_json(tmp_path / "c3.json", DOCUMENTS))
    part = task.subset(data, [2, 0])
    assert part.ids == ["own", "d-1-1"] and part.choices[1] == ["fox", "owl"]
    assert part.answers == [0, 1] and len(part) == 2


# -- the target ------------------------------------------------------------------------------


def _scoring_target(num_choices: int) -> MultipleChoiceTarget:
    """A target whose score is the first hidden feature of the first token."""
    target = MultipleChoiceTarget(2, num_choices, pooling="first", pooler=False, dropout=0.0)
    with torch.no_grad():
        target.scorer.weight.copy_(torch.tensor([[1.0, 0.0]]))
        target.scorer.bias.zero_()
    return target


def test_target_loss_is_the_softmax_over_each_questions_choices() -> None:
    target = _scoring_target(3)
    scores = [0.5, -1.0, 1e6, 2.0, 0.0, 1.0]  # question 1: two real choices and a padding one
    hidden = torch.tensor(scores)[:, None, None] * torch.tensor([1.0, 0.0])  # [6, 1, 2]
    labels = torch.tensor([[0, 0, PADDING_CHOICE], [2, 2, 2]])  # [questions, choices]
    out = target(hidden, None, labels)
    first = -math.log(math.exp(0.5) / (math.exp(0.5) + math.exp(-1.0)))
    second = -math.log(math.exp(1.0) / (math.exp(2.0) + math.exp(0.0) + math.exp(1.0)))
    assert out.loss is not None
    assert out.loss.item() == pytest.approx((first + second) / 2, rel=1e-6)
    # The padding choice's huge score neither wins nor counts: question 1 is right, 2 wrong.
    assert out.metrics["accuracy"].item() == pytest.approx(0.5)
    assert out.logits.shape == (6,)
    hidden.requires_grad_(True)
    target(hidden, None, labels).loss.backward()  # type: ignore[union-attr]
    assert hidden.grad is not None and hidden.grad[2].abs().sum() == 0


def test_target_without_labels_gives_flat_scores_and_refuses_other_label_layouts() -> None:
    target = _scoring_target(3)
    hidden = torch.randn(4, 4, 2)
    assert torch.equal(target(hidden, None, None).logits, hidden[:, 0, 0])
    # Fewer choices than num_choices is a batch of short questions: read as [2, 2].
    out = target(hidden, None, torch.tensor([[1, 1], [0, 0]]))
    assert out.loss is not None and torch.isfinite(out.loss)
    message = r"labels must be \[questions, choices\] .* got \[{}\]"
    with pytest.raises(ValueError, match=message.format("4")):  # flat labels
        target(hidden, None, torch.zeros(4, dtype=torch.int64))
    with pytest.raises(ValueError, match=message.format("1, 3")):  # not the 4 sequences
        target(hidden, None, torch.zeros(1, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match=message.format("1, 4")):  # more than num_choices
        target(hidden, None, torch.zeros(1, 4, dtype=torch.int64))


# -- stream and batches ----------------------------------------------------------------------


def _tokens(tokenizer: Tokenizer, ids: np.ndarray | torch.Tensor) -> str:
    return " ".join(tokenizer.id_to_token(int(i)) or "?" for i in ids)


def _epoch(stream: MultipleChoiceStream, tokenizer: Tokenizer) -> dict[str, dict]:
    """One epoch of the stream, each question by its question's second word."""
    questions = [next(stream) for _ in range(len(stream.answers))]
    return {_tokens(tokenizer, q["input_ids"][0]).split()[3]: q for q in questions}


def test_stream_yields_one_question_per_instance(tmp_path: Path, tokenizer: Tokenizer) -> None:
    data = read_c3(write_json(tmp_path / "c3.json", DOCUMENTS), 4)
    stream = MultipleChoiceStream(data, tokenizer, seq_length=12, seed=3)
    by_question = _epoch(stream, tokenizer)
    assert sorted(by_question) == ["old", "quiet", "red"]  # an epoch: each question once
    fox = by_question["red"]
    # Only the real choices, [choices, s], and the answer's index.
    assert fox["input_ids"].shape == fox["token_type_ids"].shape == (2, 12)
    assert fox["labels"].shape == () and int(fox["labels"]) == 1
    # [CLS] choice question [SEP] context [SEP]: the context is cut, not the question.
    assert _tokens(tokenizer, fox["input_ids"][1]) == (
        "[CLS] owl the red fox [SEP] the big horse sees the [SEP]"
    )
    assert list(fox["token_type_ids"][1]) == [0] * 6 + [1] * 6
    # Choices of other lengths are padded to the question's longest.
    short = [[[], [{"question": "it was", "choice": ["owl", "the big horse"], "answer": "owl"}], 1]]
    data = read_c3(write_json(tmp_path / "short.json", short), 4)
    question = next(MultipleChoiceStream(data, tokenizer, seq_length=12))
    assert question["input_ids"].shape == (2, 8)  # [CLS] the big horse it was [SEP] [SEP]
    assert question["attention_mask"].sum(1).tolist() == [6, 8]
    assert question["input_ids"][0, 6:].tolist() == [tokenizer.pad_id] * 2


def test_collate_flattens_questions_for_the_target(tmp_path: Path, tokenizer: Tokenizer) -> None:
    data = read_c3(write_json(tmp_path / "c3.json", DOCUMENTS), 4)
    questions = _epoch(MultipleChoiceStream(data, tokenizer, 12, seed=3), tokenizer)
    fox, farmer, owl = questions["red"], questions["old"], questions["quiet"]
    pad = tokenizer.pad_id
    batch = collate_questions([fox, owl], pad)
    # Two questions of 2 and 3 choices: [2 x 3, s], the fox question filled up with a copy
    # of its first choice, labelled as padding; the owl question padded to 12 tokens.
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (6, 12)
    assert batch["labels"].tolist() == [[1, 1, PADDING_CHOICE], [0, 0, 0]]
    assert torch.equal(batch["input_ids"][2], batch["input_ids"][0])
    assert torch.equal(batch["input_ids"][:2], torch.from_numpy(fox["input_ids"]))
    assert batch["input_ids"][3:, 7:].eq(pad).all() and batch["attention_mask"][3:, 7:].eq(0).all()
    assert batch["attention_mask"][:3].eq(1).all()
    # The task's collate is this one; the farmer's four choices widen the batch to [3 x 4, s].
    task = build_task("multiple_choice")
    wide = task.collate([fox, farmer, owl], pad)
    assert wide["input_ids"].shape == (12, 12) and wide["labels"].shape == (3, 4)
    assert wide["labels"][0].tolist() == [1, 1, PADDING_CHOICE, PADDING_CHOICE]
    # Any batch size: BatchIterator counts questions.
    stream = MultipleChoiceStream(data, tokenizer, 12, seed=3)
    for size in (1, 2, 5):
        batch = BatchIterator(stream, size, pad, collate_fn=task.collate).next_batch()
        assert batch["labels"].shape[0] == size
        assert batch["input_ids"].shape[0] == batch["labels"].numel()


def test_stream_resumes_between_questions(tmp_path: Path, tokenizer: Tokenizer) -> None:
    data = read_c3(write_json(tmp_path / "c3.json", DOCUMENTS), 4)
    task = build_task("multiple_choice")
    batches = BatchIterator(MultipleChoiceStream(data, tokenizer, 16, seed=1), 2, 0, task.collate)
    next(batches)
    state = json.loads(json.dumps(batches.state_dict()))
    expected = [next(batches) for _ in range(4)]  # across the epoch boundary
    again = BatchIterator(MultipleChoiceStream(data, tokenizer, 16, seed=1), 2, 0, task.collate)
    again.load_state_dict(state)
    for want, got in zip(expected, (next(again) for _ in range(4))):
        assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    with pytest.raises(ConfigError, match="seq_length"):
        MultipleChoiceStream(data, tokenizer, 12, seed=1).load_state_dict(state["stream"])


def test_choice_and_question_are_cut_only_when_they_alone_overflow(
    tmp_path: Path, tokenizer: Tokenizer, caplog: pytest.LogCaptureFixture
) -> None:
    data = read_c3(write_json(tmp_path / "c3.json", DOCUMENTS), 4)
    with caplog.at_level("INFO"):
        MultipleChoiceStream(data, tokenizer, 7, seed=0)
    # [CLS] + [SEP] + [SEP] leave 4 tokens: choice + question fit, the context does not.
    assert "6 of 9 sequences have their context cut to seq_length 7" in caplog.text
    assert "longer than seq_length" not in caplog.text
    caplog.clear()
    with caplog.at_level("INFO"):
        stream = MultipleChoiceStream(data, tokenizer, 5, seed=0)
    assert "9 of 9 choice + question texts are longer than seq_length 5" in caplog.text
    assert all(next(stream)["input_ids"].shape[1] == 5 for _ in range(3))


def test_batches_hold_whole_questions_and_count_their_choices(
    tmp_path: Path, tokenizer: Tokenizer
) -> None:
    data = read_c3(write_json(tmp_path / "c3.json", DOCUMENTS), 4)
    batches = list(multiple_choice_batches(data, tokenizer, 16, batch_size=6))
    # 2 + 4 choices fill the first batch; a question larger than the batch still goes whole.
    assert [b["_choices"].tolist() for b in batches] == [[2, 4], [3]]
    assert [b["input_ids"].shape[0] for b in batches] == [6, 3]
    assert all("labels" not in b for b in batches)
    assert [b["_choices"].tolist() for b in multiple_choice_batches(data, tokenizer, 16, 1)] == [
        [2],
        [4],
        [3],
    ]


def test_outputs_predictions_and_divergence(tmp_path: Path) -> None:
    task = build_task("multiple_choice", {"num_choices": 4})
    data = task.read(write_json(tmp_path / "c3.json", DOCUMENTS))
    logits = torch.tensor([0.1, 0.9, 0.0, 0.3, 0.2, 0.1, -1.0, 2.0, 0.5])
    rows = task.row_outputs(logits, {"_choices": torch.tensor([2, 4, 3])})
    assert np.isinf(rows[0][2:]).all() and rows[0][:2] == pytest.approx([0.1, 0.9])
    assert task.metrics(rows, task.gold(data)) == {"accuracy": pytest.approx(2 / 3)}
    assert task.prediction_lines(rows, data) == ["id\tanswer", "d-1-1\towl", "d-1-2\tfarmer",
                                                 "own\tmouse"]  # fmt: skip
    assert task.divergence(rows, rows) == 0.0
    shifted = [row + np.array([1.0, 0.0, 0.0, 0.0]) for row in rows]
    assert 0 < task.divergence(rows, shifted) < math.inf


# -- end to end ------------------------------------------------------------------------------


def test_finetune_evaluate_predict_on_the_command_line(
    base: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    sample = SAMPLES["multiple_choice"]
    train, dev = tmp_path / "train.json", tmp_path / "dev.json"
    sample.write(train, 192, 11)
    sample.write(dev, 48, 12)
    common = ["finetune", "--task", "multiple_choice", "--model", base, "--train", train,
              "--seq-length", "32", "--num-choices", "4", "--pooling", "max", "--lr", "3e-3",
              "--precision", "fp32", "--no-progress"]  # fmt: skip
    # --batch-size counts questions: any number works (5 is no multiple of the 4 choices).
    code, out, err = invoke(capsys, *common, "--dev", dev, "--out", tmp_path / "run",
                            "--batch-size", "5", "--steps", "150")  # fmt: skip
    assert code == 0, err
    trained = last_json(out)["last_eval"]["accuracy"]
    assert trained > 0.8
    code, out, err = invoke(capsys, "evaluate", "--model", tmp_path / "run", "--data", dev)
    assert code == 0, err
    scored = last_json(out)
    assert scored["rows"] == 48 and scored["accuracy"] == pytest.approx(trained)
    code, out, err = invoke(capsys, "predict", "--model", tmp_path / "run", "--data", dev,
                            "--out", tmp_path / "predictions.tsv")  # fmt: skip
    assert code == 0, err
    lines = (tmp_path / "predictions.tsv").read_text(encoding="utf-8").splitlines()
    documents = json.loads(dev.read_text())
    questions = [(doc[2], n, q) for doc in documents for n, q in enumerate(doc[1], start=1)]
    assert lines[0] == "id\tanswer" and len(lines) == 1 + len(questions)
    right = sum(
        line == f"{doc}-{n}\t{q['answer']}" for line, (doc, n, q) in zip(lines[1:], questions)
    )
    assert right / len(questions) == pytest.approx(trained)


def test_folds_split_questions(base: Path, tmp_path: Path) -> None:
    train = tmp_path / "train.json"
    SAMPLES["multiple_choice"].write(train, 30, 4)
    options = {"steps": 2, "lr": 1e-3, "precision": "fp32", "progress": False}
    report = finetune("multiple_choice", base, train, None, tmp_path / "cv", options,
                      batch_size=8, task_options={"seq_length": 16}, folds=3)  # fmt: skip
    assert len(report["folds"]) == 3 and 0 <= report["accuracy"]["mean"] <= 1
    assert json.loads((tmp_path / "cv" / "fold-1" / "run.json").read_text())["rows"] == 20


def test_epochs_count_questions(base: Path, tmp_path: Path, capsys) -> None:
    """--epochs 2 on 30 questions in batches of 7 questions: ceil(60 / 7) = 9 steps, and the
    stream ends 2 epochs and 3 questions in (9 x 7 = 63); finetune's default is 3 epochs."""
    train = tmp_path / "train.json"
    SAMPLES["multiple_choice"].write(train, 30, 4)
    code, out, err = invoke(capsys, "finetune", "--task", "multiple_choice", "--model", base,
                            "--train", train, "--out", tmp_path / "run", "--epochs", "2",
                            "--batch-size", "7", "--seq-length", "16", "--precision", "fp32",
                            "--no-progress")  # fmt: skip
    assert code == 0, err
    assert "--steps" not in err  # no warning to give the steps by hand
    assert last_json(out)["steps"] == 9
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert (run["rows"], run["steps"]) == (30, 9)
    saved = json.loads(next((tmp_path / "run").rglob("data_state.json")).read_text())
    position = saved["ranks"][0]["stream"]
    assert (position["epoch"], position["cursor"], position["size"]) == (2, 3, 30)
    # Without --steps or --epochs, finetune's 3 epochs: ceil(90 / 7) = 13 steps.
    code, out, err = invoke(capsys, "finetune", "--task", "multiple_choice", "--model", base,
                            "--train", train, "--out", tmp_path / "default", "--batch-size", "7",
                            "--seq-length", "16", "--precision", "fp32", "--no-progress")  # fmt: skip
    assert code == 0, err
    assert last_json(out)["steps"] == 13


def chid_as_c3(passages: list[dict]) -> list:
    """ChID (``{"content": text with #idiomNNNNNN# blanks, "candidates": [...]}`` and an answer
    map blank → candidate index) as C3 documents: one question per blank, its context the
    passage with that blank shown as [MASK] and the others removed, the candidates as choices."""
    documents = []
    for p, passage in enumerate(passages):
        questions = []
        for blank, answer in passage["answers"].items():
            context = passage["content"].replace(blank, " [MASK] ")
            for other in passage["answers"]:
                context = context.replace(other, " ")
            questions.append({"question": "", "choice": passage["candidates"],
                              "answer": passage["candidates"][answer], "id": blank})  # fmt: skip
        documents.append([[" ".join(context.split())], questions, f"passage-{p}"])
    return documents


def test_chid_style_blanks_go_through_multiple_choice(base: Path, tmp_path: Path) -> None:
    """ChID's cloze idioms are multiple choice over 10 candidates per blank: convert, then
    fine-tune (batches of two blanks, each of ten candidates), evaluate and predict."""
    rng = random.Random(0)
    idioms = [f"{adjective} {noun}" for adjective, noun in PAIRS]
    idioms += ["it was good", "it was bad", "the old owl", "the red mouse"]
    passages = []
    for p in range(12):
        candidates = rng.sample(idioms, 10)
        blanks = {f"#idiom{p:04d}{b}#": index for b, index in enumerate(rng.sample(range(10), 2))}
        content = " the horse sees {} and the fox follows {} .".format(*blanks)
        passages.append({"content": content, "candidates": candidates, "answers": blanks})
    path = write_json(tmp_path / "chid.json", chid_as_c3(passages))
    options = {"num_choices": 10, "seq_length": 24}
    data = build_task("multiple_choice", options).read(path)
    assert len(data) == 24 and data.ids[0] == "#idiom00000#"
    assert "[MASK]" in data.contexts[0] and "#idiom" not in data.contexts[0]
    train = {"steps": 10, "lr": 1e-3, "warmup": 0, "precision": "fp32", "progress": False}
    result = finetune("multiple_choice", base, path, path, tmp_path / "run", train,
                      batch_size=2, task_options=options)  # fmt: skip
    assert 0 <= result["last_eval"]["accuracy"] <= 1
    lines = predict(tmp_path / "run", path, tmp_path / "chid.tsv").read_text().splitlines()
    assert len(lines) == 25 and lines[1].startswith("#idiom00000#\t")
    assert all(line.split("\t")[1] in passages[0]["candidates"] for line in lines[1:3])


def test_real_c3_dev(tmp_path: Path) -> None:
    """The whole C3 dev file reads; a few questions checked against the file; sequences keep
    the question and cut the context."""
    root = data_dir("c3/dev.json", "vocab/google_zh_vocab.txt")
    data = read_c3(root / "c3" / "dev.json", num_choices=4)
    assert len(data) == 3816
    assert data.ids[0] == "47-275-1" and data.questions[0] == "他们在谈论什么?"
    assert data.choices[0] == ["旅行", "坏境", "工作", "家庭"] and data.answers is not None
    assert data.answers[0] == 2
    assert sorted({len(c) for c in data.choices}) == [2, 3, 4]
    assert all(c[a] for c, a in zip(data.choices, data.answers))
    chance = float(np.mean([1 / len(c) for c in data.choices]))
    assert chance == pytest.approx(0.2713, abs=1e-4)
    tokenizer = load_tokenizer(root / "vocab" / "google_zh_vocab.txt")
    first = next(multiple_choice_batches(data, tokenizer, 64, batch_size=4))
    assert first["_choices"].tolist() == [4]
    text = tokenizer.decode(first["input_ids"][2].tolist())
    assert text.replace(" ", "").startswith("[CLS]工作他们在谈论什么?[SEP]男：听说")
