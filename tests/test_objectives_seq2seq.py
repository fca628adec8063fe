"""The sequence-to-sequence objectives t5, bart, gsg and mt: noising invariants, sentinels and
mask tokens saved with the shards' tokenizer, options recorded and replaced, resumable streams
and the parallel-text reader's errors. (Training each one: test_task_conformance.py.)"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import invoke, write_corpus
from objective_samples import SAMPLES

from pretrainkit.data import BatchIterator, Shards, pretraining_stream
from pretrainkit.data.corpus import CorpusFile
from pretrainkit.data.noising import (
    gap_sentence_count,
    noise_span_mask,
    permute_sentences,
    rouge1_f,
    select_gap_sentences,
    span_corruption,
    text_infilling,
)
from pretrainkit.data.objectives import get_objective
from pretrainkit.data.objectives.gsg import MASK_SENTENCE
from pretrainkit.data.objectives.mt import read_parallel_documents
from pretrainkit.data.objectives.t5 import sentinel_ids
from pretrainkit.data.preprocessing import preprocess
from pretrainkit.data.seq2seq import seq2seq_collate
from pretrainkit.errors import ConfigError, DataError
from pretrainkit.tokenization import load_tokenizer, train_tokenizer

SENTINELS = list(range(1000, 900, -1))  # T5 numbers its sentinels down from the vocabulary end


@pytest.mark.parametrize(("density", "mean_span"), [(0.15, 3.0), (0.3, 5.0)])
def test_span_corruption_density_span_length_and_reconstruction(density, mean_span) -> None:
    rng = np.random.default_rng(0)
    noise = spans = total = 0
    for _ in range(400):
        length = int(rng.integers(50, 200))
        tokens = rng.integers(0, 900, size=length)
        mask = noise_span_mask(length, density, mean_span, rng)
        assert not mask[0]  # T5 starts with kept tokens
        noise += int(mask.sum())
        spans += int((mask & ~np.concatenate([[False], mask[:-1]])).sum())
        total += length
        source, target = span_corruption(tokens, rng, density, mean_span, SENTINELS, 1)
        assert source[-1] == 1 and target[-1] == 1
        used = [t for t in source if t in SENTINELS]
        assert used == SENTINELS[: len(used)]  # in order, each once
        assert [t for t in target if t in SENTINELS] == used
        # Put each span back behind its sentinel: the original comes back.
        pieces = np.split(target[:-1], np.flatnonzero(np.isin(target[:-1], SENTINELS))[1:])
        fill = {int(p[0]): p[1:].tolist() for p in pieces}
        rebuilt = [x for t in source[:-1] for x in (fill[t] if t in fill else [t])]
        assert rebuilt == tokens.tolist()
    assert abs(noise / total - density) < 0.01
    assert abs(noise / spans - mean_span) < 0.15 * mean_span


def test_text_infilling_ratio_one_mask_per_span_and_poisson_lengths() -> None:
    rng = np.random.default_rng(1)
    lengths: list[int] = []
    for _ in range(300):
        n = int(rng.integers(20, 120))
        tokens = rng.integers(10, 500, size=n)
        source, spans = text_infilling(tokens, rng, 0.3, 3.0, mask_id=-1)
        assert spans.sum() == int(np.ceil(n * 0.3))  # exactly 30 % removed
        assert (source == -1).sum() == len(spans)  # one mask per span, 0-length ones included
        assert len(source) <= n
        kept = source[source != -1]
        assert len(kept) == n - spans.sum()
        # The kept tokens are the original's, in order.
        assert np.isin(kept, tokens).all() and _is_subsequence(kept.tolist(), tokens.tolist())
        assert not np.any((source[1:] == -1) & (source[:-1] == -1))  # spans never touch
        lengths += spans[:-1].tolist()  # the last span may be cut to fit
    assert abs(np.mean(lengths) - 3.0) < 0.3  # Poisson(3)


def _is_subsequence(small: list[int], big: list[int]) -> bool:
    it = iter(big)
    return all(x in it for x in small)


def test_sentence_permutation_is_a_permutation() -> None:
    rng = np.random.default_rng(2)
    sentences = [np.arange(i * 10, i * 10 + 3 + i) for i in range(6)]
    orders = set()
    for _ in range(50):
        permuted, order = permute_sentences(sentences, rng)
        assert sorted(order.tolist()) == list(range(6))
        assert all(np.array_equal(p, sentences[i]) for p, i in zip(permuted, order))
        orders.add(tuple(order.tolist()))
    assert len(orders) > 40


def test_bart_instance_is_masked_permuted_source_and_original_target(tmp_path: Path) -> None:
    tokenizer = _wordpiece(tmp_path)
    bart = get_objective("bart")
    sentences = [np.arange(100, 110), np.arange(120, 125), np.arange(130, 142)]
    instance = bart.noise(sentences, np.random.default_rng(0), tokenizer)
    original = np.concatenate(sentences)
    assert instance["labels"].tolist() == [tokenizer.bos_id, *original, tokenizer.eos_id]
    source = instance["input_ids"]
    assert (source == tokenizer.mask_id).sum() >= 1
    assert len(source) - 2 - (source == tokenizer.mask_id).sum() == len(original) - 9  # ceil 8.1


def test_rouge1_and_principal_gap_sentences() -> None:
    assert rouge1_f([1, 2], [2, 3]) == pytest.approx(0.5)
    assert rouge1_f([1, 1, 2], [1, 3, 4, 5]) == pytest.approx(2 * (1 / 3) * (1 / 4) / (7 / 12))
    # s1 and s3 repeat the document's words; s0 and s2 are off-topic.
    sentences = [
        np.asarray([50, 51, 52]),
        np.asarray([1, 2, 3, 4]),
        np.asarray([60, 61]),
        np.asarray([1, 2, 3, 5]),
        np.asarray([2, 3, 70]),
    ]
    scores = [
        rouge1_f(s, np.concatenate([*sentences[:i], *sentences[i + 1 :]]))
        for i, s in enumerate(sentences)
    ]
    top = sorted(np.argsort(scores)[::-1][:2].tolist())
    assert top == [1, 3]
    rng = np.random.default_rng(0)
    assert select_gap_sentences(sentences, 2, "principal", rng).tolist() == [1, 3]
    assert select_gap_sentences(sentences, 2, "lead", rng).tolist() == [0, 1]
    picks = {tuple(select_gap_sentences(sentences, 2, "random", rng)) for _ in range(40)}
    assert len(picks) > 5 and all(len(set(p)) == 2 for p in picks)
    assert gap_sentence_count(5, 0.3) == 2 and gap_sentence_count(2, 0.3) == 1


def test_gsg_instance_masks_gap_sentences_and_joins_them(tmp_path: Path) -> None:
    tokenizer = get_objective("gsg").prepare_tokenizer(_wordpiece(tmp_path), 64)
    mask = tokenizer.token_to_id(MASK_SENTENCE)
    gsg = get_objective("gsg").configured({"sentence_selection": "lead", "gap_sentence_ratio": 0.5})
    sentences = [np.asarray([10, 11]), np.asarray([12]), np.asarray([13, 14]), np.asarray([15])]
    instance = gsg.noise(sentences, np.random.default_rng(0), tokenizer)
    eos = tokenizer.eos_id
    assert instance["input_ids"].tolist() == [mask, mask, 13, 14, 15, eos]
    assert instance["labels"].tolist() == [10, 11, 12, eos]


def test_parallel_reader_errors_name_file_and_line(tmp_path: Path) -> None:
    cases = {
        "no tab": "a b\tc d\nno tab here\n",
        "two tabs": "a\tb\tc\n",
        "empty target": "x y\t  \n",
        "empty source": "\tz\n",
    }
    for name, text in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.tsv"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(DataError) as err:
            list(read_parallel_documents(path, False, CorpusFile(path)))
        line = 2 if name == "no tab" else 1
        assert str(path) in str(err.value) and f"{line}" in str(err.value), str(err.value)
    path = tmp_path / "mixed.tsv"
    path.write_text("a\tb\n\nbad line\nc\td\n\tx\n", encoding="utf-8")
    info = CorpusFile(path)
    documents = list(read_parallel_documents(path, True, info))
    assert documents == [["a", "b"], ["c", "d"]] and info.skipped_lines == 2


def test_collate_pads_encoder_and_decoder_sides_separately() -> None:
    instances = [
        {"input_ids": np.asarray([5, 6, 7]), "labels": np.asarray([8])},
        {"input_ids": np.asarray([5]), "labels": np.asarray([9, 10, 11, 12])},
    ]
    batch = seq2seq_collate(instances, pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[8, -100, -100, -100], [9, 10, 11, 12]]
    assert batch["decoder_attention_mask"].tolist() == [[1, 0, 0, 0], [1, 1, 1, 1]]


def _wordpiece(folder: Path):
    corpus = write_corpus(folder / "vocab_corpus.txt", documents=30, seed=3)
    return train_tokenizer([corpus], "wordpiece", 200, folder / "wordpiece")


def _shards(folder: Path, objective: str, seq_length: int = 32, **options) -> Path:
    corpus = (
        SAMPLES["mt"].write_corpus(folder)
        if objective == "mt"
        else write_corpus(folder / "c.txt", 40)
    )
    train_tokenizer([corpus], "wordpiece", 200, folder / "tok")
    out = folder / f"shards-{objective}"
    preprocess([corpus], folder / "tok", objective, seq_length, out, log=lambda _: None,
               objective_options=options)  # fmt: skip
    return out


def test_t5_sentinels_are_added_and_saved_with_the_shards(tmp_path: Path) -> None:
    shards_dir = _shards(tmp_path, "t5", noise_density=0.25)
    base = load_tokenizer(tmp_path / "tok")
    saved = load_tokenizer(shards_dir / "tokenizer")
    ids = sentinel_ids(saved)
    assert len(ids) == 100 and saved.vocab_size == base.vocab_size + 100
    assert saved.encode("the <extra_id_7> cat") == [
        *base.encode("the"),
        ids[7],
        *base.encode("cat"),
    ]
    manifest = json.loads((shards_dir / "manifest.json").read_text())
    assert manifest["objective_options"] == {"noise_density": 0.25, "mean_span_length": 3.0}
    # Too few sentinels for the options asked at training time: a clear error.
    with pytest.raises(ConfigError, match="sentinel"):
        get_objective("t5").configured({"mean_span_length": 1.0}).check(1024, saved)


def test_added_tokens_round_trip_through_a_sentencepiece_tokenizer(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "c.txt", 40)
    spm = train_tokenizer([corpus], "unigram", 120, tmp_path / "spm")
    bigger = get_objective("bart").prepare_tokenizer(spm, 32)
    bigger = get_objective("gsg").prepare_tokenizer(bigger, 32)
    bigger.save(tmp_path / "saved")
    again = load_tokenizer(tmp_path / "saved")
    assert again.mask_id is not None and again.token_to_id(MASK_SENTENCE) is not None
    assert again.vocab_size == bigger.vocab_size == spm.vocab_size + (spm.mask_id is None) + 1
    text = "the cat <mask_1> the dog"
    assert again.encode(text) == bigger.encode(text)
    assert again.token_to_id(MASK_SENTENCE) in again.encode(text)


@pytest.mark.parametrize("objective", ["t5", "bart", "gsg", "mt"])
def test_stream_resumes_with_the_same_batches(objective: str, tmp_path: Path) -> None:
    shards = Shards.open(_shards(tmp_path, objective))
    spec = get_objective(objective)

    def batches(stream):
        return BatchIterator(stream, 4, shards.tokenizer.pad_id, spec.collate)

    first = batches(pretraining_stream(shards, seed=3))
    for _ in range(5):
        first.next_batch()
    state = json.loads(json.dumps(first.state_dict()))
    expected = [first.next_batch() for _ in range(3)]
    second = batches(pretraining_stream(shards, seed=3))
    second.load_state_dict(state)
    for want in expected:
        got = second.next_batch()
        assert want.keys() == got.keys()
        assert all(torch.equal(want[k], got[k]) for k in want)
    batch = expected[0]
    assert batch["input_ids"].shape[1] <= 32 and batch["labels"].shape[1] <= 32
    assert set(batch) == {"input_ids", "attention_mask", "labels", "decoder_attention_mask"}
    changed = {
        "t5": {"noise_density": 0.3},
        "bart": {"mask_ratio": 0.2},
        "gsg": {"sentence_selection": "lead"},
    }
    if objective in changed:  # a saved position is only valid for the same options
        other = batches(pretraining_stream(shards, seed=3, options=changed[objective]))
        with pytest.raises(ConfigError, match="options"):
            other.load_state_dict(state)


def test_options_replaced_at_pretrain_time_are_used_and_logged(tmp_path: Path, caplog) -> None:
    from pretrainkit.workflows.pretrain import objective_options_in_force

    manifest = json.loads((_shards(tmp_path, "gsg") / "manifest.json").read_text())
    assert manifest["objective_options"] == {
        "sentence_selection": "principal",
        "gap_sentence_ratio": 0.3,
    }
    with caplog.at_level(logging.WARNING, logger="pretrainkit.workflows.pretrain"):
        options = objective_options_in_force(manifest, {"sentence_selection": "lead"})
    assert options == {"sentence_selection": "lead", "gap_sentence_ratio": 0.3}
    assert "sentence_selection: using 'lead', not 'principal'" in caplog.text
    with pytest.raises(ConfigError, match="noise_density"):
        objective_options_in_force(manifest, {"noise_density": 0.2})
    with pytest.raises(ConfigError, match="sentence_selection"):
        objective_options_in_force(manifest, {"sentence_selection": "best"})


def test_cli_objective_flags_are_checked_against_the_objective(tmp_path: Path, capsys) -> None:
    corpus = write_corpus(tmp_path / "c.txt", 20)
    train_tokenizer([corpus], "wordpiece", 200, tmp_path / "tok")
    common = ["preprocess", "--corpus", corpus, "--tokenizer", tmp_path / "tok"]
    code, _, err = invoke(
        capsys, *common, "--objective", "t5", "--seq-length", 32, "--out", tmp_path / "a",
        "--sentence-selection", "lead",
    )  # fmt: skip
    assert code != 0 and "--sentence-selection does not apply to 'objective t5'" in err
    code, _, err = invoke(
        capsys, *common, "--objective", "bart", "--seq-length", 32, "--out", tmp_path / "b",
        "--mask-ratio", "0.4", "--no-permute-sentences",
    )  # fmt: skip
    assert code == 0, err
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["objective_options"] == {
        "mask_ratio": 0.4,
        "poisson_lambda": 3.0,
        "permute_sentences": False,
    }


def test_pretrain_uses_replaced_options_and_scores_dev_shards(tmp_path: Path) -> None:
    from pretrainkit.training import TrainConfig
    from pretrainkit.workflows.pretrain import pretrain

    shards = _shards(tmp_path, "gsg")
    sample = SAMPLES["gsg"]
    tiny = {"hidden_size": 32, "encoder.num_heads": 2, "encoder.ffn_size": 64}
    config = TrainConfig(steps=2, log_every=1, eval_every=2, precision="fp32", progress=False)
    overrides = {**sample.overrides, **tiny, "embedding.max_positions": 64}
    pretrain("t5-small", shards, tmp_path / "run", config, 4, overrides, dev=shards,
             eval_batches=2, objective_options={"sentence_selection": "random"})  # fmt: skip
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["objective_options"] == {"sentence_selection": "random", "gap_sentence_ratio": 0.3}
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    dev_losses = [value for r in records for key, value in r.items() if key.startswith("dev")]
    assert dev_losses and all(np.isfinite(dev_losses))


def test_mt_and_t5_on_the_data_mirror(tmp_path: Path) -> None:
    """The news-commentary en–zh pairs as mt shards (Chinese WordPiece vocabulary), and
    CLUECorpusSmall as t5 shards with sentinels added to a SentencePiece model."""
    from helpers import data_dir

    data = data_dir(
        "corpora/news-commentary-v13-en-zh_sampled.txt",
        "vocab/google_zh_vocab.txt",
        "corpora/CLUECorpusSmall_bert_sampled.txt",
        "vocab/cluecorpussmall_spm.model",
    )
    pairs = data / "corpora/news-commentary-v13-en-zh_sampled.txt"
    manifest = preprocess([pairs], data / "vocab/google_zh_vocab.txt", "mt", 64,
                          tmp_path / "mt", log=lambda _: None)  # fmt: skip
    assert manifest["counts"]["documents"] == 1000
    assert manifest["counts"]["sentences"] == 2000 and manifest["counts"]["skipped_lines"] == 0
    shards = Shards.open(tmp_path / "mt")
    first = next(pretraining_stream(shards, seed=0))
    assert len(first["input_ids"]) <= 64 and first["labels"][-1] == shards.tokenizer.eos_id
    text = data / "corpora/CLUECorpusSmall_bert_sampled.txt"
    lines = text.read_text(encoding="utf-8").split("\n")[:400]
    (tmp_path / "zh.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    spm = load_tokenizer(data / "vocab/cluecorpussmall_spm.model")
    preprocess([tmp_path / "zh.txt"], data / "vocab/cluecorpussmall_spm.model", "t5", 128,
               tmp_path / "t5", log=lambda _: None)  # fmt: skip
    shards = Shards.open(tmp_path / "t5")
    ids = sentinel_ids(shards.tokenizer)
    assert len(ids) == 100 and ids[0] == spm.vocab_size
    instance = next(pretraining_stream(shards, seed=0))
    assert len(instance["input_ids"]) <= 128 and instance["labels"][0] == ids[0]
