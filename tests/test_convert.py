"""HF ⇄ pretrainkit conversion through the real converter, against transformers on CPU fp32.

Each case builds a tiny HF model with random weights and odd sizes, saves it with
``save_pretrained``, converts it, compares outputs on a padded batch, converts it back and
requires every tensor to be bit-for-bit the original one.
"""

from __future__ import annotations

import json

import pytest
import torch
from helpers import invoke, require

import pretrainkit
from pretrainkit.convert import PASSTHROUGH, convert_from_hf, convert_to_hf
from pretrainkit.errors import CheckpointError

tf = require("transformers")

from convert_helpers import SIZES, broken_checkpoint_error, export_bit_exact  # noqa: E402

FAMILY = {
    "bert": (tf.BertConfig, {}),
    "roberta": (tf.RobertaConfig, {"type_vocab_size": 1}),
    "xlm-roberta": (tf.XLMRobertaConfig, {"type_vocab_size": 1}),
    "albert": (tf.AlbertConfig, {"embedding_size": 16}),
}
AUTO = {
    "Model": tf.AutoModel,
    "ForMaskedLM": tf.AutoModelForMaskedLM,
    "ForPreTraining": tf.AutoModelForPreTraining,
    "ForSequenceClassification": tf.AutoModelForSequenceClassification,
}
CASES = [
    ("bert", "Model"),
    ("bert", "ForMaskedLM"),
    ("bert", "ForPreTraining"),
    ("bert", "ForSequenceClassification"),
    ("roberta", "Model"),
    ("roberta", "ForMaskedLM"),
    ("roberta", "ForSequenceClassification"),
    ("xlm-roberta", "Model"),
    ("xlm-roberta", "ForMaskedLM"),
    ("xlm-roberta", "ForSequenceClassification"),
    ("albert", "Model"),
    ("albert", "ForPreTraining"),
    ("albert", "ForSequenceClassification"),
]
PREFIX = {"bert": "Bert", "roberta": "Roberta", "xlm-roberta": "XLMRoberta", "albert": "Albert"}


def hf_model(family: str, kind: str):
    config_class, extra = FAMILY[family]
    labels = {"id2label": {0: "neg", 1: "neutral", 2: "pos"}} if "Sequence" in kind else {}
    config = config_class(**SIZES, **extra, **labels)
    return getattr(tf, PREFIX[family] + kind)(config).eval()


def padded_batch(pad_id: int, segments: int):
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(5, 1000, (3, 11), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    ids = ids.masked_fill(mask == 0, pad_id)
    types = torch.zeros_like(ids)
    if segments > 1:
        types[:, 5:] = 1
    return ids, mask, types


def max_diff(a: torch.Tensor, b: torch.Tensor, keep: torch.Tensor | None = None) -> float:
    if keep is not None:
        a, b = a[keep], b[keep]
    return (a - b).abs().max().item()


@pytest.mark.parametrize(("family", "kind"), CASES)
def test_hf_parity_and_bit_exact_round_trip(tmp_path, family, kind):
    torch.manual_seed(0)
    hf = hf_model(family, kind)
    if kind == "Model":
        with torch.no_grad():  # a pooler that differs from HF's init: pass-through is real
            for p in hf.pooler.parameters():
                p.add_(torch.randn_like(p))
    hf.save_pretrained(tmp_path / "hf")
    ours = pretrainkit.load(convert_from_hf(tmp_path / "hf", tmp_path / "ours")).eval()
    if family in ("roberta", "xlm-roberta"):
        assert ours.config.embedding.position_offset == 2
        assert ours.embedding.parts["position"].weight.shape[0] == 40  # full table kept

    ids, mask, types = padded_batch(hf.config.pad_token_id, hf.config.type_vocab_size)
    keep = mask.bool()
    with torch.no_grad():
        expected = hf(
            input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True
        )
        got = ours(ids, attention_mask=mask, token_type_ids=types)
    assert max_diff(got.hidden_states, expected.hidden_states[-1], keep) <= 1e-5
    if kind == "ForMaskedLM":
        assert max_diff(got.logits, expected.logits, keep) <= 1e-5
    if kind == "ForPreTraining":
        pair = "nsp" if family == "bert" else "sop"
        assert max_diff(got.target_logits["mlm"], expected.prediction_logits, keep) <= 1e-5
        pair_logits = expected.seq_relationship_logits if pair == "nsp" else expected.sop_logits
        assert max_diff(got.target_logits[pair], pair_logits) <= 1e-5
    if kind == "ForSequenceClassification":
        assert ours.targets["classification"].labels == ["neg", "neutral", "pos"]
        assert max_diff(got.logits, expected.logits) <= 1e-5

    ours.save(tmp_path / "resaved")  # pass-through tensors (the pooler) survive a re-save
    again = export_bit_exact(tmp_path / "resaved", tmp_path, hf, AUTO[kind])
    assert type(hf).__name__ == PREFIX[family] + kind
    if kind == "ForSequenceClassification":
        assert again.config.id2label == {0: "neg", 1: "neutral", 2: "pos"}


def test_tokenizer_comes_along_both_ways(tmp_path, capsys):
    words = "the a cat dog sat on mat ##s ##ing run walk quick brown fox , . !".split()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    hf = tf.BertModel(tf.BertConfig(**{**SIZES, "vocab_size": len(vocab)})).eval()
    hf.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (tmp_path / "hf" / "tokenizer_config.json").write_text('{"do_lower_case": true}')
    code, out, err = invoke(
        capsys, "convert", "--from-hf", tmp_path / "hf", "--out", tmp_path / "o"
    )
    assert code == 0, err
    ours = pretrainkit.load(tmp_path / "o")
    text = "The Quick cats sat on the MAT, running!"
    reference = tf.BertTokenizer(str(tmp_path / "hf" / "vocab.txt"), do_lower_case=True)
    expected = reference(text)["input_ids"]
    assert ours.tokenizer.build_inputs(ours.tokenizer.encode(text))[0] == expected
    assert 1 in expected  # "running" → [UNK]: the vocabulary really is this one

    code, _, err = invoke(capsys, "convert", "--to-hf", tmp_path / "o", "--out", tmp_path / "back")
    assert code == 0, err
    assert (tmp_path / "back" / "vocab.txt").read_text().split("\n")[:-1] == vocab
    assert tf.AutoTokenizer.from_pretrained(tmp_path / "back")(text)["input_ids"] == expected


def test_roberta_byte_level_tokenizer_comes_along_both_ways(tmp_path):
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    merges = [("t", "h"), ("th", "e"), ("Ġ", "c"), ("Ġc", "a"), ("Ġca", "t"), ("Ġ", "the")]
    for token in [*"abcdefghijklmnopqrstuvwxyz", "Ġ", *(a + b for a, b in merges), "<mask>"]:
        vocab[token] = len(vocab)
    config = tf.RobertaConfig(**{**SIZES, "vocab_size": len(vocab), "type_vocab_size": 1})
    tf.RobertaModel(config).save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "vocab.json").write_text(json.dumps(vocab))
    lines = "\n".join(f"{a} {b}" for a, b in merges)
    (tmp_path / "hf" / "merges.txt").write_text(f"#version: 0.2\n{lines}\n")
    text = "the cat the zebra"
    hf_dir = tmp_path / "hf"
    reference = tf.RobertaTokenizer(str(hf_dir / "vocab.json"), str(hf_dir / "merges.txt"))
    expected = reference(text)["input_ids"]
    ours = pretrainkit.load(convert_from_hf(tmp_path / "hf", tmp_path / "o")).tokenizer
    assert ours.build_inputs(ours.encode(text))[0] == expected
    back = convert_to_hf(tmp_path / "o", tmp_path / "back")
    assert tf.AutoTokenizer.from_pretrained(back)(text)["input_ids"] == expected


def _broken(tmp_path, change) -> str:
    return broken_checkpoint_error(tmp_path, hf_model("bert", "ForMaskedLM"), change)


def test_missing_tensor_is_named(tmp_path):
    key = "bert.encoder.layer.2.attention.self.key.bias"
    message = _broken(tmp_path, lambda s: s.pop(key))
    assert f"missing tensors: {key}" in message


def test_extra_tensor_is_named(tmp_path):
    message = _broken(tmp_path, lambda s: s.update({"cls.extra.weight": torch.zeros(2)}))
    assert "unexpected tensors: cls.extra.weight" in message


def test_wrong_shape_is_named(tmp_path):
    key = "bert.embeddings.token_type_embeddings.weight"
    message = _broken(tmp_path, lambda s: s.update({key: torch.zeros(3, 48)}))
    assert f"{key}: file (3, 48) vs embedding.parts.segment.weight (2, 48)" in message


def test_tied_copy_that_differs_is_refused(tmp_path):
    alias = "cls.predictions.decoder.weight"
    message = _broken(tmp_path, lambda s: s.update({alias: torch.zeros(1000, 48)}))
    assert f"differ from their source: {alias}" in message


def test_unknown_model_type_lists_the_supported_ones(tmp_path):
    hf_model("bert", "Model").save_pretrained(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**config, "model_type": "bertt"}))
    with pytest.raises(CheckpointError, match=r"unknown model_type 'bertt' \(did you mean 'bert'"):
        convert_from_hf(tmp_path / "hf", tmp_path / "ours")
    with pytest.raises(CheckpointError, match="supported: albert, bert, roberta"):
        convert_from_hf(tmp_path / "hf", tmp_path / "ours")


@pytest.mark.parametrize("architecture", ["BertForMultipleChoice"])
def test_heads_not_supported_yet_are_named(tmp_path, architecture):
    getattr(tf, architecture)(tf.BertConfig(**SIZES)).save_pretrained(tmp_path / "hf")
    with pytest.raises(CheckpointError, match=f"{architecture} is not supported yet"):
        convert_from_hf(tmp_path / "hf", tmp_path / "ours")


def test_export_refuses_what_hf_cannot_compute(tmp_path):
    model = pretrainkit.build_model(
        "bert-tiny", {"hidden_size": 48, "encoder.num_heads": 3, "encoder.norm_position": "pre"}
    )
    model.save(tmp_path / "m")
    with pytest.raises(CheckpointError, match="encoder.norm_position is 'pre', bert needs 'post'"):
        convert_to_hf(tmp_path / "m", tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_preset_model_exports_and_matches_transformers(tmp_path):
    shrink = {"vocab_size": 1000, "hidden_size": 48, "encoder.num_heads": 3}
    ours = pretrainkit.build_model("bert-tiny", shrink).eval()
    ours.save(tmp_path / "m")
    hf = tf.AutoModelForPreTraining.from_pretrained(convert_to_hf(tmp_path / "m", tmp_path / "hf"))
    assert type(hf) is tf.BertForPreTraining  # targets mlm + nsp
    ids, mask, types = padded_batch(0, 2)
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask, token_type_ids=types)
        got = ours(ids, attention_mask=mask, token_type_ids=types).target_logits
    assert max_diff(got["mlm"], expected.prediction_logits, mask.bool()) <= 1e-5
    assert max_diff(got["nsp"], expected.seq_relationship_logits) <= 1e-5
    assert not (tmp_path / "m" / PASSTHROUGH).exists()
