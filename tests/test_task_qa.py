"""The ``qa`` task: the SQuAD reader and its errors, character↔token alignment and windows,
EM/F1 on hand cases, decoding over windows, the training stream, the command line, and the
alignment of every CMRC2018 answer (data mirror)."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import QUIET, data_dir, invoke, last_json
from hypothesis import given, settings
from hypothesis import strategies as st
from samp_helpers import TINY, VOCAB
from task_samples import SAMPLES

import pretrainkit
from pretrainkit import samp
from pretrainkit.errors import ConfigError, DataError
from pretrainkit.tasks import build_task
from pretrainkit.tasks.qa import QAOptions, QAStream
from pretrainkit.tasks.qa_format import locate, read_squad
from pretrainkit.tasks.qa_metrics import (
    WindowOutput,
    answer_scores,
    best_span,
    cjk_tokens,
    decode_answers,
    normalize_english,
    qa_metrics,
)
from pretrainkit.tasks.qa_windows import align_tokens, window_spans
from pretrainkit.tokenization import Tokenizer, load_tokenizer
from pretrainkit.tokenization.training import train_tokenizer

# A WordPiece vocabulary with sub-words, so that a word becomes several tokens.
WORDS = ["the", "denver", "broncos", "won", "super", "bowl", "50", "in", "un", "##aff", "##able",
         "##s", "it", "was", "a", "game", "北", "京", "上", "海", "是", "中", "国", ",", ".", "?",
         "'", "《", "》", "，", "。"]  # fmt: skip
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@pytest.fixture(scope="module")
def wordpiece(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(SPECIALS + WORDS) + "\n")
    return load_tokenizer(path)


def squad(*paragraphs: tuple[str, list[dict]]) -> dict:
    return {
        "data": [{"title": "t", "paragraphs": [{"context": c, "qas": q} for c, q in paragraphs]}]
    }


def write(path: Path, document: object) -> Path:
    path.write_text(document if isinstance(document, str) else json.dumps(document), "utf-8")
    return path


CONTEXT = "Denver Broncos won Super Bowl 50. The Broncos won it."


# -- reading ----------------------------------------------------------------------------------


def test_reader_keeps_questions_answers_and_no_answer(tmp_path: Path, caplog) -> None:
    qas = [
        {"id": "a", "question": "Who won?", "answers": [
            {"text": "Denver Broncos", "answer_start": 0},
            {"text": "Broncos", "answer_start": 7}]},
        # Off by two: moved to the nearest occurrence (the later "Broncos" at 37 is farther).
        {"id": "b", "question": "Who?", "answers": [{"text": "Broncos", "answer_start": 5}]},
        # Not in the context (CMRC writes -1): a gold answer for scoring, not a target.
        {"id": "c", "question": "What?", "answers": [{"text": "Panthers", "answer_start": -1}]},
        {"id": "d", "question": "Why?", "answers": [], "is_impossible": True},
        {"id": "e", "question": "When?", "answers": []},
    ]  # fmt: skip
    with caplog.at_level(logging.INFO, logger="pretrainkit.tasks.qa"):
        data = read_squad(write(tmp_path / "d.json", squad((CONTEXT, qas))))
    assert len(data) == 5 and data.ids == ["a", "b", "c", "d", "e"]
    assert data.contexts[0] is data.contexts[4]  # one string per paragraph
    assert data.answers == [
        ("Denver Broncos", "Broncos"),
        ("Broncos",),
        ("Panthers",),
        ("",),
        ("",),
    ]
    assert data.spans == [(0, 14), (7, 14), None, None, None]
    assert [data.unanswerable(i) for i in range(5)] == [False, False, False, True, True]
    assert "1 answer(s) were not at their answer_start" in caplog.text
    assert "1 answer(s) do not occur in their context" in caplog.text
    # Files to predict on: answers are not read, whatever they hold (CMRC's test placeholders).
    fake = [{"id": "x", "question": "?", "answers": [{"text": "FAKE", "answer_start": -1}]}]
    unlabelled = read_squad(write(tmp_path / "t.json", squad((CONTEXT, fake))), False)
    assert unlabelled.answers is None and unlabelled.spans is None and len(unlabelled) == 1


def test_locate_prefers_the_given_offset_then_the_nearest() -> None:
    assert locate("ab ab ab", "ab", 3) == 3
    assert locate("ab ab ab", "ab", 4) == 3  # 3 is 1 away, 6 is 2 away
    assert locate("ab ab ab", "ab", -1) == 0
    assert locate("ab ab ab", "abc", 0) is None


QA = {"id": "q1", "question": "Who?", "answers": [{"text": "Denver", "answer_start": 0}]}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "file is empty"),
        ('{"data": [}', "d.json:1: not valid JSON"),
        (b"\xff\xfe{", "not UTF-8"),
        ([1, 2], "the top level must be an object with a list 'data'"),
        ({"data": [{"title": "x"}]}, "data[0]: missing 'paragraphs'"),
        ({"data": [{"paragraphs": [{"context": 3, "qas": []}]}]}, "data[0].paragraphs[0]: 'context' must be a string"),
        ({"data": [{"paragraphs": [{"context": "c"}]}]}, "data[0].paragraphs[0]: missing 'qas'"),
        (squad(("c", [{"question": "?", "answers": []}])), "data[0].paragraphs[0].qas[0]: missing 'id'"),
        (squad(("c", [{**QA, "id": "a\tb"}])), "bad question id 'a\\tb'"),
        (squad(("c", [QA, QA])), "question id 'q1' appears twice"),
        (squad(("c", [{"id": "q1", "answers": []}])), "question 'q1': missing 'question'"),
        (squad(("c", [{"id": "q1", "question": "?"}])), "question 'q1': missing 'answers'"),
        (squad(("c", [{**QA, "answers": [{"text": "c"}]}])), "question 'q1' answer 0: missing 'answer_start'"),
        (squad(("c", [{**QA, "answers": [{"text": "c", "answer_start": "0"}]}])), "'answer_start' must be an integer"),
        (squad(("c", [{**QA, "answers": [{"text": "c", "answer_start": True}]}])), "'answer_start' must be an integer"),
        (squad(("c", [{**QA, "answers": ["c"]}])), "question 'q1' answer 0: expected an object"),
        (squad(("c", [{**QA, "is_impossible": "no"}])), "question 'q1': 'is_impossible' must be true or false"),
        (squad(("c", [])), "the file has no questions"),
    ],
)  # fmt: skip
def test_bad_files_name_the_file_and_the_place(tmp_path: Path, content, message: str) -> None:
    path = tmp_path / "d.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        write(path, content)
    with pytest.raises(DataError) as error:
        read_squad(path)
    assert str(error.value).startswith(str(path)) and message in str(error.value)


def test_qa_has_no_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "d.json", squad((CONTEXT, [QA])))
    with pytest.raises(ConfigError, match="no columns"):
        build_task("qa").read(path, columns=["text_a"])


@pytest.mark.parametrize(
    ("options", "message"),
    [({"doc_stride": 0}, "doc_stride must be an integer >= 1"),
     ({"unanswerable": "maybe"}, "unanswerable must be one of auto, yes, no"),
     ({"null_threshold": float("nan")}, "null_threshold must be a finite number")],
)  # fmt: skip
def test_options_are_checked(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_task("qa", options)


# -- characters to tokens, windows --------------------------------------------------------------


def test_tokens_know_their_characters(wordpiece: Tokenizer) -> None:
    text = "Unaffable  Broncos, 北京是中国。 xyz"
    (aligned,) = align_tokens(wordpiece, [text])
    tokens = [wordpiece.id_to_token(i) for i in aligned.ids]
    assert tokens == [
        "un",
        "##aff",
        "##able",
        "broncos",
        ",",
        "北",
        "京",
        "是",
        "中",
        "国",
        "。",
        "[UNK]",
    ]
    pieces = [text[s:e] for s, e in zip(aligned.starts, aligned.ends)]
    assert pieces == [
        "Un",
        "aff",
        "able",
        "Broncos",
        ",",
        "北",
        "京",
        "是",
        "中",
        "国",
        "。",
        "xyz",
    ]
    # The same tokens as the whole text: pre-training and fine-tuning see one tokenization.
    assert aligned.ids.tolist() == wordpiece.encode(text)
    assert aligned.token_span(text.index("北京"), text.index("北京") + 2) == (5, 6)
    assert aligned.token_span(9, 11) is None  # only the spaces between two words


@pytest.mark.parametrize("kind", ["wordpiece", "bpe", "unigram"])
def test_answers_round_trip_for_every_vocabulary_kind(kind: str, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    rng = random.Random(0)
    words = ["denver", "broncos", "won", "super", "bowl", "the", "game", "北京", "上海", "是"]
    corpus.write_text("\n".join(" ".join(rng.choices(words, k=8)) for _ in range(200)) + "\n")
    tokenizer = train_tokenizer([corpus], kind, 400 if kind == "bpe" else 60, tmp_path / kind)
    text = "The Broncos won Super Bowl 50, in Denver; 北京是上海? Unaffable."
    (aligned,) = align_tokens(tokenizer, [text])
    assert (np.diff(aligned.starts) >= 0).all() and (aligned.starts <= aligned.ends).all()
    # Every word, number, CJK character and punctuation mark maps to tokens and back.
    for answer in [
        "The Broncos",
        "Super Bowl 50",
        "50",
        "Denver",
        "北京是",
        "上海",
        "Unaffable",
        "?",
    ]:
        start = text.index(answer)
        first, last = aligned.token_span(start, start + len(answer))
        assert text[aligned.starts[first] : aligned.ends[last]] == answer, (kind, answer)


def test_windows_cover_the_context_with_the_stride() -> None:
    assert window_spans(0, 5, 2) == [(0, 0)]
    assert window_spans(5, 5, 2) == [(0, 5)]
    assert window_spans(12, 5, 3) == [(0, 5), (3, 5), (6, 5), (9, 3)]
    assert window_spans(12, 5, 9) == [
        (0, 5),
        (5, 5),
        (10, 2),
    ]  # a stride past the window: none lost


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(
    words=st.lists(
        st.sampled_from(WORDS + ["Denver", "xyz", "Unaffables", "  ", "\n"]), max_size=60
    ),
    room=st.integers(1, 20),
    stride=st.integers(1, 25),
)
def test_every_token_is_in_a_window_and_answers_round_trip(wordpiece, words, room, stride) -> None:
    text = " ".join(words)
    (aligned,) = align_tokens(wordpiece, [text])
    assert aligned.ids.tolist() == wordpiece.encode(text)
    spans = window_spans(len(aligned), room, stride)
    covered = set()
    for start, size in spans:
        assert 0 < size <= room or len(aligned) == 0
        covered.update(range(start, start + size))
    assert covered == set(range(len(aligned)))
    # Each word is an answer that maps to its tokens and back to its exact characters.
    at = 0
    for word in words:
        at = text.index(word, at)
        if word.strip():
            first, last = aligned.token_span(at, at + len(word))
            assert text[aligned.starts[first] : aligned.ends[last]] == word
        at += len(word)


# -- metrics --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "normal"),
    [("The Denver Broncos", "denver broncos"),
     ("  a Cat, an apple!  ", "cat apple"),
     ("Theatre of the Absurd.", "theatre of absurd"),  # articles are whole words only
     ("Super Bowl 50", "super bowl 50"),
     ("the", "")],
)  # fmt: skip
def test_english_normalisation_is_squads(text: str, normal: str) -> None:
    assert normalize_english(text) == normal


@pytest.mark.parametrize(
    ("prediction", "gold", "exact", "f1"),
    [
        ("Denver Broncos", "The Denver Broncos", 1.0, 1.0),
        ("Denver Broncos won", "Denver Broncos", 0.0, 0.8),  # P 2/3, R 1
        ("the Carolina Panthers", "Denver Broncos", 0.0, 0.0),
        ("broncos broncos", "broncos", 0.0, 2 / 3),  # a bag of words: P 1/2, R 1
        ("", "", 1.0, 1.0),  # no answer, rightly
        ("", "Denver", 0.0, 0.0),
        ("the", "", 1.0, 1.0),  # normalises to nothing: SQuAD 2.0 scores it as no answer
        # CJK: characters are tokens, punctuation goes (CMRC2018's scoring).
        ("《战国无双3》", "战国无双3", 1.0, 1.0),
        ("北京市", "北京", 0.0, 0.8),  # P 2/3, R 1
        ("北京上海", "上海北京", 0.0, 0.5),  # the longest common run (2), not the bag (4)
        ("光荣和ω-force", "光荣和ω-force", 1.0, 1.0),
        ("1990年", "1990", 0.0, 2 / 3),  # the prediction's CJK makes it character-level
        ("中国", "", 0.0, 0.0),
    ],
)  # fmt: skip
def test_answer_scores_on_hand_cases(prediction: str, gold: str, exact: float, f1: float) -> None:
    assert answer_scores(prediction, gold) == pytest.approx((exact, f1))


def test_metrics_take_the_best_gold_answer_per_question() -> None:
    assert cjk_tokens("Super Bowl 50是，北京") == ["super", "bowl", "50", "是", "北", "京"]
    scores = qa_metrics(["Denver", "北京市", ""], [("Broncos", "Denver"), ("北京", "上海"), ("x",)])
    assert scores == pytest.approx({"f1": (1 + 0.8 + 0) / 3, "exact_match": 1 / 3})


# -- decoding -----------------------------------------------------------------------------------


def window(question: int, start: list[float], end: list[float], first_char: int) -> WindowOutput:
    """A window of len(start) - 1 context tokens, each one character wide from first_char."""
    chars = np.arange(first_char, first_char + len(start) - 1)
    return WindowOutput(question, np.array(start, float), np.array(end, float), chars, chars + 1)


def test_best_span_respects_order_length_and_n_best() -> None:
    start = np.array([-9.0, 5.0, 2.0, 0.0])
    end = np.array([9.0, 0.0, 0.0, 4.0])
    assert best_span(start, end, 20, 30) == (9.0, 1, 3)  # the end at 0 lies before the start
    assert best_span(start, end, 20, 2) == (6.0, 2, 3)  # 1..3 is three tokens long
    assert best_span(start, end, 1, 30) is None  # best start 1, best end 0: no span
    assert best_span(np.array([]), np.array([]), 5, 5) is None


def test_decoding_picks_the_best_span_over_windows() -> None:
    context = "abcdefghij"
    outputs = [
        # Question 0: window 1 (chars 0-4) has a span scoring 3, window 2 (chars 3-8) one of 7 (chars 5-6).
        window(0, [0, 2, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0], first_char=0),
        window(0, [0, 0, 0, 4, 0, 0, 0], [0, 0, 0, 0, 3, 0, 0], first_char=3),
        # Question 1: the null score (10) beats every span (2).
        window(1, [5, 1, 0], [5, 0, 1], first_char=0),
    ]
    no = QAOptions(unanswerable="no")
    assert decode_answers(outputs, [context, context], no) == ["fg", "ab"]
    yes = QAOptions(unanswerable="yes")
    assert decode_answers(outputs, [context, context], yes) == ["fg", ""]
    lenient = QAOptions(unanswerable="yes", null_threshold=8.5)
    assert decode_answers(outputs, [context, context], lenient) == ["fg", "ab"]
    # The null score is the lowest over a question's windows (the window that holds the answer).
    held = [window(0, [9, 1], [9, 1], 0), window(0, [0, 3], [0, 3], 1)]
    assert decode_answers(held, ["xy"], yes) == ["y"]


def test_predictions_are_one_line_per_question(tmp_path: Path) -> None:
    path = write(tmp_path / "d.json", squad(("a\tb\nc", [{**QA, "id": "x"}, {**QA, "id": "y"}])))
    task = build_task("qa", {"unanswerable": "yes"})
    data = task.read(path)
    outputs = [window(0, [0, 9, 0, 0, 0, 0], [0, 0, 0, 0, 0, 9], 0), window(1, [9, 0], [9, 0], 0)]
    assert task.prediction_lines(outputs, data) == ["id\tanswer", "x\ta b c", "y\t"]
    assert task.divergence(outputs, outputs) == 0.0
    shifted = [window(0, [0, 0, 9, 0, 0, 0], [0, 0, 0, 9, 0, 0], 0), outputs[1]]
    assert task.divergence(outputs, shifted) > 1.0


# -- training -----------------------------------------------------------------------------------


def test_stream_targets_the_answer_or_position_zero(wordpiece: Tokenizer, tmp_path: Path) -> None:
    context = "the broncos won . " * 6 + "denver won super bowl 50 ."
    qas = [{"id": "q", "question": "who won ?", "answers": [{"text": "super bowl", "answer_start": context.index("super")}]},
           {"id": "n", "question": "the ?", "answers": [], "is_impossible": True},
           {"id": "gone", "question": "?", "answers": [{"text": "panthers", "answer_start": -1}]}]  # fmt: skip
    data = read_squad(write(tmp_path / "d.json", squad((context, qas))))
    options = QAOptions(seq_length=16, doc_stride=6)
    stream = QAStream(data, wordpiece, options, seed=3)
    rows = stream.rows
    assert set(rows[:, 0].tolist()) == {0, 1}  # the question without its answer is left out
    found = []
    for _ in range(len(rows)):
        instance = next(stream)
        ids = instance["input_ids"].tolist()
        assert len(ids) <= 16 and ids[0] == wordpiece.cls_id
        first, last = int(instance["start_positions"]), int(instance["end_positions"])
        if first:
            found.append(wordpiece.decode(ids[first : last + 1]))
    assert found and set(found) == {"super bowl"}
    # Every window of the unanswerable question points at position 0.
    assert (rows[rows[:, 0] == 1][:, 3:] == 0).all()
    # Resuming continues with the same instances.
    state = stream.state_dict()
    following = next(stream)["input_ids"]
    again = QAStream(data, wordpiece, options, seed=3)
    again.load_state_dict(state)
    assert (next(again)["input_ids"] == following).all()
    with pytest.raises(ConfigError, match="cannot resume"):
        QAStream(data, wordpiece, QAOptions(seq_length=16, doc_stride=5), seed=3).load_state_dict(
            state
        )


def test_training_needs_a_located_answer(wordpiece: Tokenizer, tmp_path: Path) -> None:
    fake = [{"id": "x", "question": "?", "answers": [{"text": "FAKE", "answer_start": -1}]}]
    data = read_squad(write(tmp_path / "t.json", squad((CONTEXT, fake))))
    with pytest.raises(DataError, match="0 training windows"):
        QAStream(data, wordpiece, QAOptions(), seed=0)


def test_folds_split_by_question(tmp_path: Path) -> None:
    qas = [{**QA, "id": f"q{i}"} for i in range(4)]
    task = build_task("qa")
    data = task.read(write(tmp_path / "d.json", squad((CONTEXT, qas[:2]), ("Denver.", qas[2:]))))
    part = task.subset(data, [1, 2])
    assert part.ids == ["q1", "q2"] and part.contexts == [CONTEXT, "Denver."]
    assert part.spans == [(0, 6), (0, 6)] and len(part) == 2


def test_fit_labels_settles_unanswerable(tmp_path: Path) -> None:
    plain = read_squad(write(tmp_path / "a.json", squad((CONTEXT, [QA]))))
    none = read_squad(
        write(tmp_path / "b.json", squad((CONTEXT, [QA, {**QA, "id": "n", "answers": []}])))
    )
    for data, expected in ((plain, "no"), (none, "yes")):
        task = build_task("qa")
        task.fit_labels(data)
        assert task.record()["options"]["unanswerable"] == expected
    task = build_task("qa", {"unanswerable": "no"})
    task.fit_labels(none)  # the user's choice stands
    assert task.options.unanswerable == "no"


def test_finetune_evaluate_predict_on_the_command_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    torch.manual_seed(0)
    model = pretrainkit.build_model("bert-tiny", {**TINY, "targets": [{"name": "mlm"}]})
    model.tokenizer = load_tokenizer(tmp_path / "vocab.txt")
    base = model.save(tmp_path / "base")
    sample = SAMPLES["qa"]
    sample.write(tmp_path / "train.json", 192, 1)
    sample.write(tmp_path / "dev.json", 32, 2)
    code, _, err = invoke(
        capsys, "finetune", "--task", "qa", "--model", base, "--train", tmp_path / "train.json",
        "--dev", tmp_path / "dev.json", "--out", tmp_path / "run", "--steps", "80", "--lr", "3e-3",
        "--warmup", "5", "--batch-size", "16", "--seq-length", "32", "--doc-stride", "16",
        "--max-answer-length", "5", *QUIET,
    )  # fmt: skip
    assert code == 0, err
    folder = tmp_path / "run" / "model"
    record = json.loads((folder / "task.json").read_text())
    assert record["options"]["doc_stride"] == 16 and record["options"]["unanswerable"] == "no"
    code, out, err = invoke(capsys, "evaluate", "--model", folder, "--data", tmp_path / "dev.json")
    assert code == 0, err
    scores = last_json(out)
    assert scores["task"] == "qa" and scores["rows"] == 32 and scores["f1"] > 0.7
    code, _, err = invoke(capsys, "predict", "--model", folder, "--data", tmp_path / "dev.json",
                          "--out", tmp_path / "pred.tsv")  # fmt: skip
    assert code == 0, err
    lines = (tmp_path / "pred.tsv").read_text().splitlines()
    document = json.loads((tmp_path / "dev.json").read_text())
    gold = {
        q["id"]: q["answers"][0]["text"]
        for p in document["data"][0]["paragraphs"]
        for q in p["qas"]
    }
    assert lines[0] == "id\tanswer" and [line.split("\t")[0] for line in lines[1:]] == list(gold)
    right = sum(gold[qid] == answer for qid, answer in (line.split("\t") for line in lines[1:]))
    assert right / len(gold) == pytest.approx(scores["exact_match"])
    # SAMP scores the QA head through the task (F1 over decoded answers, KL of the boundaries).
    for name, seed in (("calib", 3), ("select", 4)):
        sample.write(tmp_path / f"{name}.json", 24, seed)
    quantized = samp.quantize(pretrainkit.load(folder), tmp_path / "calib.json",
                              tmp_path / "select.json", tolerance=1.0,
                              report=tmp_path / "dev.json", rounds=1)  # fmt: skip
    report = quantized.samp_plan.report
    assert report["metric_name"] == "f1" and report["chosen_drop_select"] <= 1.0
    assert report["float_metric_report"] == pytest.approx(100 * scores["f1"], abs=1e-6)
    # A flag of another task is refused, naming the task's own.
    code, _, err = invoke(
        capsys, "finetune", "--task", "qa", "--model", base, "--train", tmp_path / "train.json",
        "--out", tmp_path / "run2", "--steps", "1", "--pooling", "mean",
    )  # fmt: skip
    assert code == 2 and "--pooling does not apply to task 'qa'" in err


# -- real data ----------------------------------------------------------------------------------


def test_every_cmrc2018_answer_aligns() -> None:
    """CMRC2018 dev and test with the BERT Chinese vocabulary: every answer that occurs in its
    context maps to tokens that give back its exact characters (all but a handful inside a
    multi-character token, e.g. "4个" in "34个")."""
    root = data_dir("cmrc2018/dev.json", "cmrc2018/test.json", "vocab/google_zh_vocab.txt")
    tokenizer = load_tokenizer(root / "vocab" / "google_zh_vocab.txt")
    # The test split's answers are placeholders ("FAKE_ANSWER_1", -1): read it for prediction.
    test = read_squad(root / "cmrc2018" / "test.json", require_answers=False)
    assert len(test) == 2000
    document = json.loads((root / "cmrc2018" / "dev.json").read_text(encoding="utf-8"))
    data = read_squad(root / "cmrc2018" / "dev.json")
    assert len(data) == 3219 and data.spans is not None
    contexts = list(dict.fromkeys(data.contexts + test.contexts))
    aligned = dict(zip(contexts, align_tokens(tokenizer, contexts)))
    assert all(aligned[c].ids.tolist() == tokenizer.encode(c) for c in contexts[:50])
    answers = exact = absent = 0
    for article in document["data"]:
        for paragraph in article["paragraphs"]:
            context = paragraph["context"]
            for qa in paragraph["qas"]:
                for answer in qa["answers"]:
                    answers += 1
                    start = locate(context, answer["text"], answer["answer_start"])
                    if start is None:
                        absent += 1
                        continue
                    # Tokens hold no whitespace: " 1999年" comes back as "1999年".
                    text = answer["text"].strip()
                    start += answer["text"].index(text)
                    end = start + len(text)
                    span = aligned[context].token_span(start, end)
                    assert span is not None, qa["id"]
                    first, last = aligned[context].starts[span[0]], aligned[context].ends[span[1]]
                    assert first <= start and end <= last, qa["id"]  # never cut short
                    exact += context[first:last] == text
    assert answers == 9657 and absent < 200
    assert answers - absent - exact <= 10, (answers, absent, exact)
    assert all(span is not None for span in data.spans)  # every question has a target
