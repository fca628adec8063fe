"""ALBERT hidden groups (``num_hidden_groups``) ⇄ ``encoder.layer_groups`` through the real
converter: import parity layer by layer, export of a grouped factorised model that transformers
and sentence-transformers load, bit-exact round trips, and the refusals.

Tiny models (hidden 48, 3 heads, 4 layers, factorised to 16), random weights, CPU fp32.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import require

import pretrainkit
from pretrainkit.convert import convert_from_hf, convert_to_hf
from pretrainkit.errors import CheckpointError

tf = require("transformers")

from convert_helpers import export_bit_exact  # noqa: E402

WORDS = "the a cat dog sat on mat ##s run walk quick brown fox big red , . !".split()
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
TEXTS = ["the cat sat on the mat .", "a dog", "the quick brown fox , the big red dog !", "cats"]
SIZES = dict(
    hidden_size=48, num_attention_heads=3, intermediate_size=96, max_position_embeddings=40
)


def hf_albert(kind: str, groups: int, layers: int = 4, **extra):
    config = tf.AlbertConfig(
        vocab_size=len(VOCAB),
        embedding_size=16,
        num_hidden_layers=layers,
        num_hidden_groups=groups,
        **SIZES,
        **extra,
    )
    return getattr(tf, "Albert" + kind)(config).eval()


def our_config(groups: int, factorized: int | None = 16, targets: tuple = ("mlm",)) -> dict:
    """A pretrainkit ALBERT-shaped model: 4 layers, ``groups`` blocks."""
    return {
        "name": "student",
        "vocab_size": len(VOCAB),
        "hidden_size": 48,
        "embedding": {
            "parts": ["word", "position", "segment"],
            "max_positions": 40,
            "factorized_size": factorized,
            "layer_norm": True,
            "dropout": 0.0,
        },
        "encoder": {
            "num_layers": 4,
            "num_heads": 3,
            "ffn_size": 96,
            "layer_groups": groups,
            "dropout": 0.0,
            "attention_dropout": 0.0,
        },
        "targets": [{"name": name} for name in targets],
    }


def shake(module: torch.nn.Module) -> None:
    """Move every parameter off its initial value (norms start at ones and zeros), so that a
    tensor mapped to the wrong place shows."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))


def padded_batch():
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(5, len(VOCAB), (3, 11), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    types = torch.zeros_like(ids)
    types[:, 5:] = 1
    return ids.masked_fill(mask == 0, 0), mask, types


def max_layer_diff(ours, hf, ids, mask, types) -> float:
    """Largest difference over every layer's output (real tokens): the groups apply in order."""
    keep = mask.bool()
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask, token_type_ids=types)
        states = hf(
            input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True
        ).hidden_states[1:]  # [0] is the embedding output
        got = ours.layer_outputs(ids, attention_mask=mask, token_type_ids=types)
    assert len(got) == len(states) == 4
    diffs = [(a[keep] - b[keep]).abs().max().item() for a, b in zip(got, states, strict=True)]
    if hasattr(expected, "logits"):
        with torch.no_grad():
            logits = ours(ids, attention_mask=mask, token_type_ids=types).logits
        diffs.append((logits[keep] - expected.logits[keep]).abs().max().item())
    return max(diffs)


@pytest.mark.parametrize(("kind", "groups"), [("Model", 2), ("ForMaskedLM", 2), ("Model", 4)])
def test_hf_groups_import_with_parity_and_export_bit_exact(tmp_path, kind, groups):
    torch.manual_seed(0)
    hf = hf_albert(kind, groups)
    shake(hf)
    hf.save_pretrained(tmp_path / "hf")
    ours = pretrainkit.load(convert_from_hf(tmp_path / "hf", tmp_path / "ours")).eval()
    assert ours.config.encoder.layer_groups == groups
    assert not ours.config.encoder.share_layers
    assert len(ours.encoder.layers) == groups  # one stored block per HF group
    assert max_layer_diff(ours, hf, *padded_batch()) <= 1e-5

    auto = tf.AutoModel if kind == "Model" else tf.AutoModelForMaskedLM
    again = export_bit_exact(tmp_path / "ours", tmp_path, hf, auto)
    assert again.config.num_hidden_groups == groups and again.config.inner_group_num == 1


def test_grouped_factorised_model_exports_to_hf_and_back_bit_exact(tmp_path):
    torch.manual_seed(0)
    model = pretrainkit.build_model(our_config(groups=2)).eval()
    shake(model)
    model.save(tmp_path / "ours")
    back = convert_to_hf(tmp_path / "ours", tmp_path / "hf")
    written = json.loads((back / "config.json").read_text())
    assert written["architectures"] == ["AlbertForMaskedLM"]
    assert (written["num_hidden_groups"], written["num_hidden_layers"]) == (2, 4)
    assert written["embedding_size"] == 16
    hf, info = tf.AutoModelForMaskedLM.from_pretrained(back, output_loading_info=True)
    assert type(hf) is tf.AlbertForMaskedLM
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not info["mismatched_keys"]
    assert max_layer_diff(model, hf.eval(), *padded_batch()) <= 1e-5

    # HF → ours again: every tensor bit for bit, the recurrence as it was.
    returned = pretrainkit.load(convert_from_hf(back, tmp_path / "again"))
    assert returned.config.encoder.layer_groups == 2
    original = model.state_dict()
    state = returned.state_dict()
    assert sorted(state) == sorted(original)
    assert [k for k in original if not torch.equal(original[k], state[k])] == []


def test_distilled_student_exports_to_sentence_transformers(tmp_path, monkeypatch):
    """A student with a factorised embedding and two groups, made by the distillation code from
    a converted BERT (so still named "bert"), embeds in sentence-transformers as in encode."""
    st = require("sentence_transformers")
    from pretrainkit.distill import StudentOptions, make_student

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    teacher = tf.BertModel(
        tf.BertConfig(vocab_size=len(VOCAB), num_hidden_layers=4, **SIZES)
    ).eval()
    teacher.save_pretrained(tmp_path / "teacher-hf")
    (tmp_path / "teacher-hf" / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    source = pretrainkit.load(convert_from_hf(tmp_path / "teacher-hf", tmp_path / "teacher"))
    student = make_student(source, StudentOptions(layer_groups=2, factorized_size=16))
    assert student.config.name == "bert" and student.config.encoder.layer_groups == 2
    student.encode_defaults = {"pooling": "mean", "normalize": True}
    student.save(tmp_path / "student")

    back = convert_to_hf(tmp_path / "student", tmp_path / "hf")
    assert json.loads((back / "config.json").read_text())["model_type"] == "albert"
    modules = json.loads((back / "modules.json").read_text())
    assert [m["path"] for m in modules] == ["", "1_Pooling", "2_Normalize"]
    expected = pretrainkit.load(tmp_path / "student").encode(TEXTS)  # the recorded defaults
    got = st.SentenceTransformer(str(back), device="cpu").encode(TEXTS)
    assert got.shape == (len(TEXTS), 48)
    assert np.abs(got - expected).max() <= 1e-5
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


def test_groups_without_factorised_embedding_are_refused(tmp_path):
    model = pretrainkit.build_model(our_config(groups=2, factorized=None))
    model.save(tmp_path / "ours")
    for family in (None, "bert", "albert"):
        with pytest.raises(CheckpointError) as info:
            convert_to_hf(tmp_path / "ours", tmp_path / "hf", family=family)
        message = str(info.value)
        assert "encoder.layer_groups: 2" in message and "embedding.factorized_size" in message
        assert "no HF family" in message
    assert not (tmp_path / "hf").exists()  # nothing written

    pretrainkit.build_model(our_config(groups=2)).save(tmp_path / "factorised")
    with pytest.raises(CheckpointError, match=r"layer_groups: 2 .* cannot be written as HF bert"):
        convert_to_hf(tmp_path / "factorised", tmp_path / "hf", family="bert")

    # A block per layer is no recurrence: plain BERT stores exactly that.
    config = our_config(groups=4, factorized=None, targets=())
    pretrainkit.build_model(config).save(tmp_path / "every-layer")
    back = convert_to_hf(tmp_path / "every-layer", tmp_path / "bert")
    assert json.loads((back / "config.json").read_text())["model_type"] == "bert"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"num_hidden_groups": 2, "inner_group_num": 2}, "inner_group_num 2 is not supported"),
        ({"num_hidden_groups": 3}, "num_hidden_groups 3 does not divide num_hidden_layers 4"),
    ],
)
def test_hf_groups_we_cannot_compute_are_refused(tmp_path, extra, message):
    extra = dict(extra)  # the parameter's dict is shared between runs
    groups = extra.pop("num_hidden_groups")
    hf_albert("Model", groups, **extra).save_pretrained(tmp_path / "hf")
    with pytest.raises(CheckpointError, match=message):
        convert_from_hf(tmp_path / "hf", tmp_path / "ours")
    assert not (tmp_path / "ours").exists()
