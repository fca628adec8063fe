"""text2text: its metrics (ROUGE-L against rouge-score), its file reader's errors, the
decoder-only layout (loss on the target only) and fine-tuning a decoder-only model end to end
(the encoder-decoder path runs in the conformance test)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from helpers import require
from samp_helpers import TINY, VOCAB
from task_samples import SAMPLES

import pretrainkit
from pretrainkit.errors import ConfigError, DataError
from pretrainkit.tasks import build_task
from pretrainkit.tasks.text2text import IGNORE, Encoder, read_text2text
from pretrainkit.tasks.text_metrics import (
    exact_match,
    keyword_f1,
    normalize,
    rouge_l,
    text_metrics,
    units,
)
from pretrainkit.tokenization import load_tokenizer
from pretrainkit.workflows.finetune import evaluate, finetune, predict, task_model

CHINESE = "基于平方和优化的飞行器大角度机动镇定控制器设计方法研究"


def test_units_split_chinese_into_characters() -> None:
    assert units("abc 中文x, 2") == ["abc", "中", "文", "x,", "2"]
    assert normalize(" 中 文  ab  c ") == "中文 ab c"


def test_rouge_l_matches_rouge_score() -> None:
    """Space-separated words, and Chinese characters (rouge-score sees them joined by spaces,
    split on whitespace; ours reads the plain string character by character)."""
    rouge_scorer = require("rouge_score.rouge_scorer", "the ROUGE-L reference").RougeScorer

    class Whitespace:
        def tokenize(self, text: str) -> list[str]:
            return text.split()

    words = rouge_scorer(["rougeL"])  # its default tokenizer: lower-case alphanumeric words
    characters = rouge_scorer(["rougeL"], tokenizer=Whitespace())
    rng = random.Random(0)
    vocabulary = ["the", "fox", "red", "sees", "horse", "a", "big", "owl"]
    for _ in range(200):
        reference = " ".join(rng.choices(vocabulary, k=rng.randint(1, 12)))
        prediction = " ".join(rng.choices(vocabulary, k=rng.randint(1, 12)))
        expected = words.score(reference, prediction)["rougeL"].fmeasure
        assert rouge_l(prediction, reference) == pytest.approx(expected, abs=1e-12)
        reference = "".join(rng.choices(CHINESE, k=rng.randint(1, 20)))
        prediction = "".join(rng.choices(CHINESE, k=rng.randint(1, 20)))
        expected = characters.score(" ".join(reference), " ".join(prediction))["rougeL"]
        assert rouge_l(prediction, reference) == pytest.approx(expected.fmeasure, abs=1e-12)
    assert rouge_l("", "中文") == 0.0


def test_keyword_f1_and_exact_match() -> None:
    # Sets: order and repeats do not count; 2 of 3 predicted are right, 2 of 4 wanted found.
    assert keyword_f1("甲_乙_丙_乙", "乙_甲_丁_戊", "_") == pytest.approx(
        2 * (2 / 3 * 0.5) / (2 / 3 + 0.5)
    )
    assert keyword_f1("a_b", "b_a", "_") == 1.0 and keyword_f1("x", "y", "_") == 0.0
    assert exact_match("工 学", "工学") == 1.0 and exact_match("工学", "理学") == 0.0
    scores = text_metrics(["工学", "理学"], ["工学", "工学"], ["accuracy", "rouge_l"])
    assert scores == {"accuracy": 0.5, "rouge_l": 0.75}
    with pytest.raises(ValueError, match="unknown metric"):
        text_metrics(["a"], ["a"], ["bleu"])


def test_metric_option_orders_the_metrics() -> None:
    task = build_task("text2text", {"metric": "keyword_f1,rouge_l"})
    assert task.metric_names == ("keyword_f1", "rouge_l")
    assert build_task("text2text").metric_names == ("rouge_l", "accuracy")
    with pytest.raises(ConfigError, match="unknown 'rouge'.*did you mean 'rouge_l'"):
        build_task("text2text", {"metric": "rouge"})
    with pytest.raises(ConfigError, match="decoding must be one of greedy, beam"):
        build_task("text2text", {"decoding": "sample"})


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("p\tsource\ttarget\np\tsource only\n", 2, "expected 3 tab-separated fields"),
        ("source\ttarget\nsource\t\n", 2, "the target is empty"),
        ("p\ta\tb\n\tx\ty\np\t\tz\n", 3, "the source is empty"),
        ("a\tb\tc\td\n", 1, "expected \\[prompt<TAB>\\]source<TAB>target, got 4"),
        ("source\ttarget\na\tb\tc\n", 2, "expected 2 tab-separated fields"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = tmp_path / "bad.tsv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=message) as error:
        read_text2text(path)
    assert error.value.line == line and str(path) in str(error.value)


def test_reader_layouts(tmp_path: Path) -> None:
    path = tmp_path / "rows.tsv"
    path.write_text("to title\tabstract one\ttitle one\nto title\tabstract two\ttitle two\n")
    data = read_text2text(path)
    assert (data.prompts, data.targets, data.first_line) == (
        ["to title"] * 2,
        ["title one", "title two"],
        1,
    )
    path.write_text("source\ttarget\na\tb\n")  # a header
    data = read_text2text(path)
    assert (data.prompts, data.sources, data.targets, data.first_line) == (None, ["a"], ["b"], 2)
    path.write_text("only a source\n")  # a file to predict on
    assert read_text2text(path, require_targets=False).sources == ["only a source"]
    with pytest.raises(DataError, match="no target column"):
        read_text2text(path)


@pytest.fixture()
def tokenizer(tmp_path: Path):
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return load_tokenizer(tmp_path / "vocab.txt")


def test_decoder_only_loss_is_on_the_target_only(tokenizer) -> None:
    options = build_task("text2text", {"seq_length": 10, "target_length": 3}).options
    prompt, source, target = (
        tokenizer.encode("it was"),
        tokenizer.encode("the big horse"),
        tokenizer.encode("horse fox owl"),
    )
    decoder_only = Encoder(tokenizer, False, options).instance(prompt, source, target)
    context = [tokenizer.cls_id, *prompt, tokenizer.sep_id, *source[:2], tokenizer.sep_id]
    answer = [*target[:2], tokenizer.eos_id]  # cut to target_length, the end token included
    assert decoder_only["input_ids"].tolist() == context + answer  # 10 = seq_length
    assert decoder_only["labels"].tolist() == [IGNORE] * len(context) + answer
    seq2seq = Encoder(tokenizer, True, options).instance(prompt, source, target)
    assert seq2seq["input_ids"].tolist() == [
        tokenizer.cls_id,
        *prompt,
        tokenizer.sep_id,
        *source,
        tokenizer.sep_id,
    ]
    assert seq2seq["labels"].tolist() == answer


def test_an_encoder_only_model_is_refused(tokenizer) -> None:
    base = pretrainkit.build_model("bert-tiny", {**TINY, "targets": [{"name": "mlm"}]})
    base.tokenizer = tokenizer
    with pytest.raises(ConfigError, match="encoder-decoder model or a decoder-only one"):
        task_model(base, build_task("text2text"))


def test_decoder_only_model_learns_and_predicts(tmp_path: Path, tokenizer) -> None:
    """A tiny causal LM learns ``sentence → its two nouns``; evaluate and predict generate."""
    torch.manual_seed(0)
    overrides = {**TINY, "encoder.num_layers": 2, "targets": [{"name": "lm"}]}
    base = pretrainkit.build_model("gpt2-small", overrides)
    base.tokenizer = tokenizer
    train, dev = tmp_path / "train.tsv", tmp_path / "dev.tsv"
    SAMPLES["text2text"].write(train, 192, 1)
    SAMPLES["text2text"].write(dev, 32, 2)
    options = {"seq_length": 24, "target_length": 4, "metric": "accuracy,rouge_l,keyword_f1",
               "keyword_separator": " "}  # fmt: skip
    train_options = {"steps": 100, "lr": 3e-3, "warmup": 5, "log_every": 20, "precision": "fp32",
                     "progress": False}  # fmt: skip
    result = finetune("text2text", base, train, dev, tmp_path / "run", train_options,
                      batch_size=16, task_options=options)  # fmt: skip
    scores = result["last_eval"]
    assert scores["accuracy"] > 0.6 and scores["keyword_f1"] >= scores["accuracy"], scores
    losses = [json.loads(line).get("loss") for line in (tmp_path / "run" / "metrics.jsonl").open()]
    losses = [loss for loss in losses if loss is not None]
    assert losses[-1] < 0.3 * losses[0], losses
    folder = tmp_path / "run" / "model"
    assert evaluate(folder, dev)["accuracy"] == pytest.approx(scores["accuracy"])
    lines = predict(folder, dev, tmp_path / "out.txt").read_text().splitlines()
    gold = [row.split("\t")[2] for row in dev.read_text().splitlines()]
    assert lines[0] == "prediction" and len(lines) == 33
    assert sum(p == g for p, g in zip(lines[1:], gold)) / 32 == pytest.approx(scores["accuracy"])
    # Beam search is a task option: the same model, decoded with 3 beams, still finds them.
    model = pretrainkit.load(folder)
    beam = build_task("text2text", {**options, "decoding": "beam", "num_beams": 3})
    outputs = beam.batch_outputs(model, next(beam.batches(beam.read(dev), tokenizer, 32)))
    assert beam.metrics(outputs, gold)["accuracy"] > 0.6


def test_a_classifier_on_a_seq2seq_body_keeps_its_encoder_alone(tmp_path: Path) -> None:
    """A head that reads the encoder (classification) fine-tunes a BART-shaped body without its
    decoder: the encoder starts from the body's weights, and the task learns."""
    from helpers import write_classification
    from sample_text2text import tiny_seq2seq

    base = tiny_seq2seq(tmp_path / "base")
    write_classification(tmp_path / "train.tsv", 192, 1)
    write_classification(tmp_path / "dev.tsv", 48, 2)
    body = pretrainkit.load(base)
    model = task_model(body, build_task("classification", {"seq_length": 32}, ["0", "1"]))
    assert model.decoder is None and model.tgt_embedding is None and not model.config.is_seq2seq
    for key, value in body.encoder.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[key], value), key
    options = {"steps": 60, "lr": 3e-3, "warmup": 5, "precision": "fp32", "progress": False}
    result = finetune("classification", base, tmp_path / "train.tsv", tmp_path / "dev.tsv",
                      tmp_path / "run", options, batch_size=16,
                      task_options={"seq_length": 32})  # fmt: skip
    assert result["last_eval"]["accuracy"] > 0.8, result["last_eval"]
    saved = pretrainkit.load(tmp_path / "run" / "model")
    assert saved.decoder is None and "decoder" not in saved.config.to_dict()
