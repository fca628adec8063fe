"""The prompt task: templates and label words, their bad input, inputs with one mask, the cloze
head (the mlm head's weights, the label words' logits), fine-tuning both ways, the command line."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import invoke, write_classification
from samp_helpers import TINY, VOCAB

import pretrainkit
from pretrainkit.errors import ConfigError, DataError
from pretrainkit.model import Model
from pretrainkit.targets.cloze import ClozeTarget
from pretrainkit.targets.language_model import MaskedLMTarget
from pretrainkit.tasks import Task, build_task, task_of
from pretrainkit.tasks.prompt import (
    Prompt,
    PromptClassification,
    PromptOptions,
    parse_label_words,
    parse_template,
)
from pretrainkit.tokenization import Tokenizer, load_tokenizer
from pretrainkit.workflows.finetune import evaluate, finetune, predict, task_model

OPTIONS = {"template": "{text_a} it was {mask} .", "label_words": "0:bad,1:good"}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    vocab = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab.write_text("\n".join([*VOCAB, "##ness"]) + "\n")  # "goodness" is two pieces
    return load_tokenizer(vocab)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The conformance test's base: a tiny BERT with an mlm head, not pre-trained."""
    root = tmp_path_factory.mktemp("base")
    (root / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    torch.manual_seed(0)
    model = pretrainkit.build_model("bert-tiny", {**TINY, "targets": [{"name": "mlm"}]})
    model.tokenizer = load_tokenizer(root / "vocab.txt")
    return model.save(root / "model")


def task(**options: Any) -> PromptClassification:
    built = build_task("prompt", {**OPTIONS, **options})
    assert isinstance(built, PromptClassification)
    return built


# --- options ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("", "template is empty"),
        ("   ", "template is empty"),
        ("{text_a} it was [MASK] .", "has no {mask} slot"),
        ("it was {mask} .", "has no {text_a} slot"),
        ("{txt_a} {mask}", "unknown slot {txt_a} (did you mean 'text_a'?)"),
        ("{text_a} {mask} {mask}", "the slot {mask} appears twice"),
    ],
)
def test_bad_templates(template: str, message: str) -> None:
    with pytest.raises(ConfigError, match=_literal(message)):
        build_task("prompt", {"template": template})


@pytest.mark.parametrize(
    ("words", "message"),
    [
        ("", "label_words is empty"),
        ("0:bad", "at least two labels"),
        ("0:bad,1", "'1' is not label:word"),
        ("0:bad,0:good", "label '0' has two words"),
        ("0:bad,1:bad", "the word 'bad' stands for two labels"),
    ],
)
def test_bad_label_words(words: str, message: str) -> None:
    with pytest.raises(ConfigError, match=_literal(message)):
        build_task("prompt", {"label_words": words})


def _literal(text: str) -> str:
    return re.escape(text)


def test_template_pieces_keep_their_spacing() -> None:
    parts = parse_template("{text_a} It was {mask}.  {text_b}")
    assert [(p.kind, p.text, p.space) for p in parts] == [
        ("text_a", "", False), ("text", "It was", True), ("mask", "", True),
        ("text", ".", False), ("text_b", "", True),
    ]  # fmt: skip
    assert parse_label_words(" neg : bad , pos:good ") == {"neg": "bad", "pos": "good"}
    assert task().labels == ["0", "1"]  # the label set is the label words', in order


# --- inputs -----------------------------------------------------------------------------------
def test_inputs_have_one_mask_and_cut_only_the_text(tokenizer: Tokenizer) -> None:
    prompt = Prompt(PromptOptions(seq_length=12, **OPTIONS), tokenizer)
    assert prompt.word_ids == [tokenizer.token_to_id("bad"), tokenizer.token_to_id("good")]
    (ids,) = prompt.encode_texts(["the big horse sees the red fox [MASK] ."], "text_a")
    input_ids, types, mask = prompt.build(ids, None)
    tokens = [tokenizer.id_to_token(i) for i in input_ids]
    # [CLS] + 6 text tokens + "it was [MASK] ." + [SEP] = 12: the text was cut, not the template.
    assert tokens == ["[CLS]", "the", "big", "horse", "sees", "the", "red",
                      "it", "was", "[MASK]", ".", "[SEP]"]  # fmt: skip
    assert mask == 9 and types == [0] * 12
    # A mask typed in the text becomes [UNK]: the input keeps exactly one mask, the slot's.
    (typed,) = prompt.encode_texts(["[MASK] fox"], "text_a")
    assert typed == [tokenizer.unk_id, tokenizer.token_to_id("fox")]
    with pytest.raises(ConfigError, match="seq_length 5 leaves no room for the text"):
        Prompt(PromptOptions(seq_length=5, **OPTIONS), tokenizer)


def test_label_words_must_be_one_token(tokenizer: Tokenizer) -> None:
    with pytest.raises(ConfigError, match=_literal("'goodness' is not one token of the model's "
                       "vocabulary: it tokenises as ['good', '##ness']")):  # fmt: skip
        Prompt(PromptOptions(**{**OPTIONS, "label_words": "0:bad,1:goodness"}), tokenizer)
    with pytest.raises(ConfigError, match=_literal("'terrific' is not one token of the model's "
                       "vocabulary: it tokenises as ['[UNK]']")):  # fmt: skip
        Prompt(PromptOptions(**{**OPTIONS, "label_words": "0:bad,1:terrific"}), tokenizer)
    with pytest.raises(ConfigError, match="contains the mask token as text; write the mask"):
        Prompt(PromptOptions(template="{text_a} [MASK] {mask}"), tokenizer)


def test_tokenizer_without_a_mask_is_refused(tokenizer: Tokenizer) -> None:
    causal = copy.copy(tokenizer)  # as GPT-2's: a vocabulary without a mask token
    causal.mask_id = None
    with pytest.raises(ConfigError, match="the tokenizer has no mask token"):
        Prompt(PromptOptions(**OPTIONS), causal)


def test_data_checks(tmp_path: Path, tokenizer: Tokenizer) -> None:
    path = tmp_path / "train.tsv"
    path.write_text("label\ttext_a\n1\tgood fox\n2\tbad fox\n")
    with pytest.raises(DataError, match=r"train.tsv:3: label '2' has no label word"):
        task().read(path)
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("label\ttext_a\ttext_b\n1\ta\tb\n")
    data = task().read(pairs)
    with pytest.raises(ConfigError, match=r"has a text_b column but the template has no"):
        next(task().batches(data, tokenizer, 4))
    paired = task(template="{text_a} ? {mask} , {text_b}")
    batch = next(paired.batches(data, tokenizer, 4))
    assert batch["input_ids"][0, int(batch["_mask_position"][0])] == tokenizer.mask_id
    single = tmp_path / "one.tsv"
    single.write_text("label\ttext_a\n1\tgood fox\n")
    with pytest.raises(DataError, match=r"the template has a \{text_b\} slot but the file"):
        paired.stream(paired.read(single), tokenizer, 0, 0, 1)


# --- the cloze head ---------------------------------------------------------------------------
def test_cloze_head_is_the_mlm_head_read_at_the_label_words() -> None:
    torch.manual_seed(0)
    mlm = MaskedLMTarget(16, 16, 30)
    cloze = ClozeTarget(16, 16, 30, word_ids=[7, 3])
    cloze.load_state_dict(mlm.state_dict())  # strict: the same names and shapes
    hidden = torch.randn(2, 5, 16)
    with torch.no_grad():
        full = mlm(hidden, None, None).logits  # [2, 5, 30]
        scores = cloze(hidden, None, None).logits
        assert torch.allclose(scores, full[..., [7, 3]], atol=1e-6)
        labels = torch.full((2, 5), -100)
        labels[0, 2], labels[1, 4] = 3, 7  # vocabulary ids of the gold words at the masks
        out = cloze(hidden, None, labels)
        expected = F.cross_entropy(full[[0, 1], [2, 4]][:, [7, 3]], torch.tensor([1, 0]))
        assert float(out.loss) == pytest.approx(float(expected), rel=1e-5)
        # Without candidates the vocabulary is the candidate set: the MLM loss of the gold word.
        vocab = ClozeTarget(16, 16, 30)
        vocab.load_state_dict(mlm.state_dict())
        expected = F.cross_entropy(full[[0, 1], [2, 4]], torch.tensor([3, 7]))
        assert float(vocab(hidden, None, labels).loss) == pytest.approx(float(expected), rel=1e-5)
        labels[0, 2] = 5  # not a label word
        with pytest.raises(ValueError, match="not one of word_ids"):
            cloze(hidden, None, labels)
    with pytest.raises(ConfigError, match="word_ids must be distinct"):
        ClozeTarget(16, 16, 30, word_ids=[3, 3])
    with pytest.raises(ConfigError, match="below the vocab size 30"):
        ClozeTarget(16, 16, 30, word_ids=[3, 30])


def _with_seams(base: Model, spec: PromptClassification) -> Model:
    """What workflows.finetune.task_model does with the two proposed seams (prepare before
    target(), initial_head after the body is copied)."""
    spec.prepare(base.tokenizer)
    model = pretrainkit.build_model(base.config.with_targets([spec.target()]))
    for slot in ("embedding", "encoder"):
        getattr(model, slot).load_state_dict(getattr(base, slot).state_dict())
    model.target_modules()["cloze"].load_state_dict(spec.initial_head(base.target_modules()))
    model.tie_weights()
    model.tokenizer, model.task_record = base.tokenizer, spec.record()
    return model


def test_the_seams_reuse_the_pretrained_head(base: Path, tmp_path: Path) -> None:
    pre = pretrainkit.load(base)
    spec = task()
    model = _with_seams(pre, spec)
    head = model.target_modules()["cloze"]
    assert head.word_ids == spec.prompt(pre.tokenizer).word_ids
    for key, value in pre.target_modules()["mlm"].state_dict().items():
        assert torch.equal(head.state_dict()[key], value), key
    # Before any training, its label-word scores are the pre-trained MLM's at the mask.
    dev = tmp_path / "dev.tsv"
    write_classification(dev, 8, 2)
    data = spec.read(dev)
    batch = next(spec.batches(data, pre.tokenizer, 8))
    inputs = {k: v for k, v in batch.items() if not k.startswith("_")}
    model.eval(), pre.eval()  # no dropout
    with torch.no_grad():
        ours = spec.row_outputs(model(**inputs).logits, batch)
        full = pre(**inputs).logits[torch.arange(8), batch["_mask_position"]]
    words = spec.prompt(pre.tokenizer).word_ids
    assert np.allclose(np.stack(ours), full[:, words].double().numpy(), atol=1e-5)
    no_mlm = spec.initial_head({})
    assert no_mlm == {}


@pytest.mark.parametrize("seams", [False, True])
def test_finetune_evaluate_predict(base: Path, tmp_path: Path, seams: bool) -> None:
    """Today's workflow (the head scores the whole vocabulary) and a task prepared with the
    tokenizer first (the head scores the label words only, as with the proposed seam) both learn
    the cue-word file, and evaluate and predict from the saved folder."""
    train, dev = tmp_path / "train.tsv", tmp_path / "dev.tsv"
    write_classification(train, 192, 1)
    write_classification(dev, 48, 2)
    spec = task(seq_length=32)
    if seams:
        spec.prepare(pretrainkit.load(base).tokenizer)
    options = {"steps": 60, "lr": 3e-3, "warmup": 5, "precision": "fp32", "progress": False}
    result = finetune(spec, base, train, dev, tmp_path / "run", options, batch_size=16)
    assert result["last_eval"]["accuracy"] > 0.8, result["last_eval"]
    folder = tmp_path / "run" / "model"
    config = (folder / "config.yaml").read_text()
    assert ("word_ids" in config) == (seams or hasattr(Task, "prepare"))
    scored = evaluate(folder, dev)
    assert scored["accuracy"] == pytest.approx(result["last_eval"]["accuracy"])
    lines = predict(folder, dev, tmp_path / "p.tsv").read_text().splitlines()
    assert lines[0] == "label\tprobability" and len(lines) == 49
    assert {line.split("\t")[0] for line in lines[1:]} <= {"0", "1"}
    assert task_of(pretrainkit.load(folder)).record()["options"]["label_words"] == "0:bad,1:good"


def test_command_line(base: Path, tmp_path: Path, capsys) -> None:
    train, dev = tmp_path / "train.tsv", tmp_path / "dev.tsv"
    write_classification(train, 64, 1)
    write_classification(dev, 16, 2)
    test = tmp_path / "test.tsv"
    test.write_text(
        "".join(line.split("\t")[1] + "\n" for line in dev.read_text().splitlines()[1:])
    )
    common = ["--task", "prompt", "--model", base, "--train", train, "--dev", dev,
              "--label-words", "0:bad,1:good", "--seq-length", "32"]  # fmt: skip
    code, _, err = invoke(capsys, "finetune", *common, "--out", tmp_path / "run", "--template",
                          "{text_a} it was {mask} .", "--steps", "20", "--lr", "3e-3",
                          "--batch-size", "16", "--precision", "fp32", "--no-progress")  # fmt: skip
    assert code == 0, err
    record = json.loads((tmp_path / "run" / "model" / "task.json").read_text())
    assert record["options"]["template"] == "{text_a} it was {mask} ." and record["labels"] == [
        "0", "1",
    ]  # fmt: skip
    code, out, err = invoke(capsys, "evaluate", "--model", tmp_path / "run", "--data", dev)
    assert code == 0, err
    assert json.loads(out[out.index("{") :])["rows"] == 16
    code, _, err = invoke(capsys, "predict", "--model", tmp_path / "run", "--data", test,
                          "--columns", "text_a", "--out", tmp_path / "p.tsv")  # fmt: skip
    assert code == 0, err
    assert len((tmp_path / "p.tsv").read_text().splitlines()) == 17
    # Bad options stop before anything is written.
    code, _, err = invoke(capsys, "finetune", *common, "--out", tmp_path / "bad", "--template",
                          "{text_a} it was .", "--steps", "1")  # fmt: skip
    assert code == 2 and "has no {mask} slot" in err
    code, _, err = invoke(capsys, "finetune", *common[:-4], "--label-words", "0:bad,1:terrific",
                          "--out", tmp_path / "bad", "--steps", "1")  # fmt: skip
    assert code == 2 and "'terrific' is not one token" in err
    assert not (tmp_path / "bad").exists()


def test_the_workflow_starts_from_the_pretrained_head(base: Path) -> None:
    pre = pretrainkit.load(base)
    spec = task()
    model = task_model(pre, spec)
    head = model.target_modules()["cloze"]
    assert head.word_ids == spec.prompt(pre.tokenizer).word_ids
    for key, value in pre.target_modules()["mlm"].state_dict().items():
        assert torch.equal(head.state_dict()[key], value), key
    assert head.decoder.weight is model.embedding.word_weight  # still tied
