"""Token-classification and question-answering heads of BERT, RoBERTa, XLM-R and ALBERT vs
transformers.

Each case builds a tiny HF model with random weights and odd sizes, converts it, compares logits
(real tokens) and losses with the same labels, converts it back bit for bit and loads the export
through the Auto class.
"""

from __future__ import annotations

import json

import pytest
import torch
from helpers import require  # noqa: E402
from safetensors.torch import load_file

import pretrainkit
from pretrainkit.convert import convert_from_hf, convert_to_hf

tf = require("transformers")

from convert_helpers import SIZES  # noqa: E402

FAMILY = {
    "bert": (tf.BertConfig, {}, "Bert"),
    "roberta": (tf.RobertaConfig, {"type_vocab_size": 1}, "Roberta"),
    "xlm-roberta": (tf.XLMRobertaConfig, {"type_vocab_size": 1}, "XLMRoberta"),
    "albert": (tf.AlbertConfig, {"embedding_size": 16}, "Albert"),
}
TAGS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
AUTO = {
    "ForTokenClassification": tf.AutoModelForTokenClassification,
    "ForQuestionAnswering": tf.AutoModelForQuestionAnswering,
}
TARGET = {
    "ForTokenClassification": "token_classification",
    "ForQuestionAnswering": "span_extraction",
}


def hf_model(family: str, kind: str):
    config_class, extra, prefix = FAMILY[family]
    labels = {"id2label": TAGS} if kind == "ForTokenClassification" else {}
    config = config_class(**SIZES, **extra, **labels)
    return getattr(tf, prefix + kind)(config).eval()


def batch(pad_id: int, padded: bool):
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(5, 1000, (3, 11), generator=g)
    mask = torch.ones_like(ids)
    if padded:
        mask[1, 7:] = 0
        mask[2, 4:] = 0
    return ids.masked_fill(mask == 0, pad_id), mask, torch.zeros_like(ids)


def labels_for(kind: str, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    if kind == "ForTokenClassification":
        tags = torch.randint(0, len(TAGS), mask.shape, generator=g)
        tags[:, 0] = -100  # [CLS] and non-first sub-tokens are ignored
        return {"labels": tags.masked_fill(mask == 0, -100)}
    return {"start_positions": torch.tensor([1, 3, 2]), "end_positions": torch.tensor([4, 6, 3])}


def hf_logits(kind: str, out) -> torch.Tensor:
    if kind == "ForTokenClassification":
        return out.logits
    return torch.stack([out.start_logits, out.end_logits], dim=-1)


@pytest.mark.parametrize("family", ["bert", "roberta", "xlm-roberta", "albert"])
@pytest.mark.parametrize("kind", ["ForTokenClassification", "ForQuestionAnswering"])
def test_head_parity_loss_and_round_trip(tmp_path, family, kind):
    torch.manual_seed(0)
    hf = hf_model(family, kind)
    hf.save_pretrained(tmp_path / "hf")
    ours = pretrainkit.load(convert_from_hf(tmp_path / "hf", tmp_path / "ours")).eval()
    target = TARGET[kind]
    assert [t.name for t in ours.config.targets] == [target]
    if kind == "ForTokenClassification":
        assert ours.targets[target].labels == list(TAGS.values())

    ids, mask, types = batch(hf.config.pad_token_id, padded=True)
    keep = mask.bool()
    with torch.no_grad():
        expected = hf_logits(kind, hf(input_ids=ids, attention_mask=mask, token_type_ids=types))
        got = ours(ids, attention_mask=mask, token_type_ids=types)
    assert got.logits.shape == expected.shape
    assert (got.logits - expected)[keep].abs().max().item() <= 1e-5

    # HF's QA softmax also spans padding (its logits are unmasked), so the loss is compared on
    # a batch without padding; the tagging loss ignores padding on both sides.
    ids, mask, types = batch(hf.config.pad_token_id, padded=kind == "ForTokenClassification")
    labels = labels_for(kind, mask)
    with torch.no_grad():
        hf_loss = hf(input_ids=ids, attention_mask=mask, token_type_ids=types, **labels).loss
        our_out = ours(ids, attention_mask=mask, token_type_ids=types, **labels)
    assert our_out.loss is not None
    assert abs(our_out.loss.item() - hf_loss.item()) <= 1e-5
    metric = "token_accuracy" if kind == "ForTokenClassification" else "start_accuracy"
    assert 0.0 <= our_out.metrics[metric].item() <= 1.0

    back = convert_to_hf(tmp_path / "ours", tmp_path / "back")
    original = load_file(str(tmp_path / "hf" / "model.safetensors"))
    returned = load_file(str(back / "model.safetensors"))
    assert sorted(returned) == sorted(original)
    assert [k for k in original if not torch.equal(original[k], returned[k])] == []
    config = json.loads((back / "config.json").read_text())
    assert config["architectures"] == [FAMILY[family][2] + kind]
    again, info = AUTO[kind].from_pretrained(back, output_loading_info=True)
    assert type(again) is type(hf)
    assert not info["missing_keys"]
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    if kind == "ForTokenClassification":
        assert again.config.id2label == TAGS
    with torch.no_grad():
        ids, mask, types = batch(hf.config.pad_token_id, padded=True)
        reloaded = hf_logits(kind, again.eval()(input_ids=ids, attention_mask=mask))
        assert torch.equal(reloaded[mask.bool()], expected[mask.bool()])


def test_preset_with_token_head_exports(tmp_path):
    shrink = {"vocab_size": 1000, "hidden_size": 48, "encoder.num_heads": 3}
    targets = [{"name": "token_classification", "labels": ["O", "X", "Y"], "dropout": 0.2}]
    ours = pretrainkit.build_model("bert-tiny", {**shrink, "targets": targets}).eval()
    ours.save(tmp_path / "m")
    hf = tf.AutoModelForTokenClassification.from_pretrained(
        convert_to_hf(tmp_path / "m", tmp_path / "hf")
    )
    assert type(hf) is tf.BertForTokenClassification
    assert hf.config.id2label == {0: "O", 1: "X", 2: "Y"}
    assert hf.config.classifier_dropout == 0.2
