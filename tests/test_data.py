"""Preprocessing into shards and the streams read back from them.

Most tests use a "numbered" corpus: word k of the corpus is "wk", whose id is k + 5 in a
hand-made WordPiece vocabulary, so token ids rise by one through the whole corpus and any
instance can be checked against where it must have come from.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import data_dir, require

from pretrainkit.data import (
    BatchIterator,
    Shards,
    collate,
    mask_tokens,
    preprocess,
    pretraining_stream,
    read_documents,
)
from pretrainkit.data.workers import encode_chunks
from pretrainkit.errors import ConfigError, DataError
from pretrainkit.tokenization import load_tokenizer

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # ids 0..4
NUM_WORDS = 6000


def quiet(_: str) -> None:
    pass


def write_numbered(directory: Path, seed: int = 0) -> tuple[Path, Path, list[list[int]]]:
    """vocab.txt, corpus.txt and the expected ids of each document."""
    rng = random.Random(seed)
    vocab = directory / "vocab.txt"
    vocab.write_text("\n".join(SPECIALS + [f"w{k}" for k in range(NUM_WORDS)]) + "\n")
    lines, documents, word = [], [], 0
    while word < NUM_WORDS - 100:
        document: list[int] = []
        for _ in range(rng.randint(1, 8)):
            size = rng.randint(1, 12)
            lines.append(" ".join(f"w{k}" for k in range(word, word + size)))
            document += range(word + 5, word + size + 5)
            word += size
        documents.append(document)
        lines.append("")
    corpus = directory / "corpus.txt"
    corpus.write_text("\n".join(lines) + "\n")
    return vocab, corpus, documents


@pytest.fixture(scope="module")
def numbered(tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("numbered")
    vocab, corpus, documents = write_numbered(directory)
    preprocess([corpus], vocab, "mlm", 34, directory / "shards", log=quiet)
    return vocab, corpus, documents, directory / "shards"


def first_batches(shards_dir: Path, objective: str, skip: int, take: int, **kw):
    batches = BatchIterator(pretraining_stream(Shards.open(shards_dir), objective, **kw), 4, 0)
    for _ in range(skip):
        batches.next_batch()
    state = json.loads(json.dumps(batches.state_dict()))  # must survive JSON
    return state, [batches.next_batch() for _ in range(take)]


def original_ids(instance: dict) -> np.ndarray:
    """Undo the masking: put the labels back where they were set."""
    ids = np.array(instance["input_ids"])
    labels = np.array(instance["labels"])
    return np.where(labels != -100, labels, ids)


# --- preprocess --------------------------------------------------------------------------
def test_preprocess_writes_exactly_the_tokens(numbered) -> None:
    vocab, corpus, documents, shards_dir = numbered
    manifest = json.loads((shards_dir / "manifest.json").read_text())
    flat = [t for d in documents for t in d]
    assert manifest["counts"] == {
        "tokens": len(flat),
        "sentences": corpus.read_text().count("\n") - len(documents),
        "documents": len(documents),
        "skipped_lines": 0,
    }
    assert manifest["dtype"] == "uint16" and manifest["objective"] == "mlm"
    tokens = np.fromfile(shards_dir / "tokens.bin", dtype="<u2")
    assert tokens.tolist() == flat
    document_ends = np.load(shards_dir / "documents.npy")
    sentence_ends = np.load(shards_dir / "sentences.npy")
    assert (
        sentence_ends[document_ends - 1].tolist() == np.cumsum([len(d) for d in documents]).tolist()
    )
    content = (shards_dir / "tokens.bin").read_bytes()
    assert manifest["content_hash"] == hashlib.sha256(content).hexdigest()
    assert manifest["corpora"][0]["sha256"] == hashlib.sha256(corpus.read_bytes()).hexdigest()
    assert load_tokenizer(shards_dir / "tokenizer").encode("w7 w8") == [12, 13]
    shards = Shards.open(shards_dir, verify=True)
    assert shards.read_tokens(10, 13).tolist() == flat[10:13]


def test_two_workers_write_identical_shards(numbered, tmp_path: Path) -> None:
    vocab, corpus, _, shards_dir = numbered
    preprocess([corpus], vocab, "mlm", 34, tmp_path / "two", workers=2, log=quiet)
    for name in ("tokens.bin", "sentences.npy", "documents.npy", "manifest.json"):
        assert (tmp_path / "two" / name).read_bytes() == (shards_dir / name).read_bytes()
    # The helper processes alone (no work shared with this one) give the same chunks.
    tokenizer = load_tokenizer(vocab)
    docs = list(read_documents(corpus))
    chunks = [docs[i : i + 7] for i in range(0, len(docs), 7)]
    serial = list(encode_chunks(chunks, tokenizer, vocab, np.dtype("<u2"), 1))
    helpers = list(encode_chunks(chunks, tokenizer, vocab, np.dtype("<u2"), 3, share_work=False))
    for mine, theirs in zip(serial, helpers, strict=True):
        for a, b in zip(mine, theirs, strict=True):
            np.testing.assert_array_equal(a, b)


def test_jsonl_and_large_vocab(tmp_path: Path) -> None:
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(SPECIALS + [f"w{k}" for k in range(70000)]) + "\n")
    docs = [["w1 w2", "w69999"], ["w3"]]
    lines = [json.dumps({"text": "\n".join(d)}) for d in docs]
    (tmp_path / "c.jsonl").write_text("\n".join(lines) + "\n\n")
    manifest = preprocess([tmp_path / "c.jsonl"], vocab, "lm", 4, tmp_path / "out", log=quiet)
    assert manifest["dtype"] == "uint32"
    assert manifest["counts"]["sentences"] == 3 and manifest["counts"]["documents"] == 2
    tokens = np.fromfile(tmp_path / "out" / "tokens.bin", dtype="<u4")
    assert tokens.tolist() == [6, 7, 70004, 8]


BAD_INPUTS = {
    "not_utf8.txt": (b"w1 w2\n\nw3\n\xff\xfe w4\n", r"not_utf8\.txt:4: not UTF-8"),
    "bad.jsonl": (b'{"text": "w1"}\n{"text": \n', r"bad\.jsonl:2: not valid JSON"),
    "no_text.jsonl": (b'{"text": "w1"}\n\n{"body": "w2"}\n', r'no_text\.jsonl:3: .*"text"'),
    "empty.txt": (b"\n\n  \n", r"empty\.txt: corpus holds no tokens"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_names_file_and_line(numbered, tmp_path: Path, name: str) -> None:
    content, message = BAD_INPUTS[name]
    (tmp_path / name).write_bytes(content)
    out = tmp_path / "out"
    with pytest.raises(DataError, match=message):
        preprocess([tmp_path / name], numbered[0], "mlm", 16, out, log=quiet)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no out, no out.tmp-*


def test_skip_bad_lines_counts_them(numbered, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"w1 w2\n\xff\nw3\n\nw4\n")
    (tmp_path / "b.jsonl").write_bytes(b'{"text": "w5"}\nnot json\n{"x": 1}\n')
    logged: list[str] = []
    files = [tmp_path / "a.txt", tmp_path / "b.jsonl"]
    manifest = preprocess(
        files, numbered[0], "lm", 4, tmp_path / "out", skip_bad_lines=True, log=logged.append
    )
    assert manifest["counts"]["skipped_lines"] == 3
    assert manifest["counts"]["tokens"] == 5 and manifest["counts"]["documents"] == 3
    assert any("skipped 2 bad lines" in line for line in logged)
    assert any("skipped lines: 3" in line for line in logged)


def test_missing_file_and_bad_settings(numbered, tmp_path: Path) -> None:
    vocab, corpus = numbered[0], numbered[1]
    with pytest.raises(DataError, match="nothing.txt: corpus file not found"):
        preprocess([tmp_path / "nothing.txt"], vocab, "mlm", 16, tmp_path / "out")
    with pytest.raises(ConfigError, match="did you mean 'albert'"):
        preprocess([corpus], vocab, "albret", 16, tmp_path / "out")
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "vocab.json").write_text(json.dumps({"w": 0, "1": 1, "<|endoftext|>": 2}))
    (gpt2 / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(ConfigError, match="has no mask token"):
        preprocess([corpus], gpt2, "mlm", 16, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpt2"]


def test_shards_open_rejects_broken_folders(numbered, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nowhere: data folder not found"):
        Shards.open(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    preprocess([numbered[1]], numbered[0], "lm", 8, broken, log=quiet)
    with open(broken / "tokens.bin", "r+b") as f:
        f.truncate(100)
    with pytest.raises(DataError, match=r"tokens\.bin: has 100 bytes"):
        Shards.open(broken)
    (broken / "manifest.json").write_text("{")
    with pytest.raises(DataError, match=r"manifest\.json:1: not valid JSON"):
        Shards.open(broken)


# --- streams -------------------------------------------------------------------------------
@pytest.mark.parametrize(("objective", "separator", "width"), [("mlm", 3, 32), ("lm", 3, 34)])
def test_windows_cover_the_stream_once_per_epoch(numbered, objective, separator, width) -> None:
    documents, shards = numbered[2], Shards.open(numbered[3])
    expected = [t for d in documents for t in (*d, separator)]  # [SEP] after each document
    count = len(expected) // width
    stream = pretraining_stream(shards, objective)
    seen = {}
    for _ in range(count):
        instance = next(stream)
        ids = original_ids(instance)
        window = ids[1:-1] if objective == "mlm" else ids
        if objective == "mlm":
            assert (ids[0], ids[-1]) == (2, 3) and len(ids) == 34
        else:
            np.testing.assert_array_equal(instance["labels"], instance["input_ids"])
        j = int(np.argmax(window != separator))  # a separator's id does not say where it is
        start = expected.index(int(window[j])) - j
        assert window.tolist() == expected[start : start + width]
        seen[start] = True
    assert sorted(seen) == [i * width for i in range(count)]
    assert stream.state_dict()["epoch"] == 0
    next(stream)  # the first window of the next epoch
    assert stream.state_dict()["epoch"] == 1


def test_masking_fractions() -> None:
    rng = np.random.default_rng(0)
    special = np.array([0, 1, 2, 3, 4])
    ids = rng.integers(5, 1000, size=200_000)
    ids[::10] = 2  # specials are never chosen
    masked, labels = mask_tokens(ids, rng, 4, 1000, special)
    chosen = labels != -100
    assert abs(chosen.sum() / (ids != 2).sum() - 0.15) < 0.005
    assert not chosen[::10].any()
    np.testing.assert_array_equal(labels[chosen], ids[chosen])
    became_mask = (masked[chosen] == 4).mean()
    unchanged = (masked[chosen] == ids[chosen]).mean()
    random_ids = masked[chosen & (masked != 4) & (masked != ids)]
    assert abs(became_mask - 0.8) < 0.01 and abs(unchanged - 0.1) < 0.01
    assert abs(len(random_ids) / chosen.sum() - 0.1) < 0.01
    assert random_ids.min() >= 5  # random replacements are never special
    np.testing.assert_array_equal(masked[~chosen], ids[~chosen])


def test_stream_masking_rate(numbered) -> None:
    stream = pretraining_stream(Shards.open(numbered[3]), "mlm", seed=3)
    labels = np.concatenate([next(stream)["labels"][1:-1] for _ in range(300)])
    assert abs((labels != -100).mean() - 0.15) < 0.01


@pytest.mark.parametrize("objective", ["bert", "albert"])
def test_sentence_pairs(numbered, objective: str) -> None:
    documents, shards = numbered[2], Shards.open(numbered[3])
    document_of = {t: i for i, d in enumerate(documents) for t in d}
    stream = pretraining_stream(shards, objective, seq_length=24, seed=1)
    pair_labels = []
    for _ in range(600):
        instance = next(stream)
        ids, types = original_ids(instance), instance["token_type_ids"]
        assert len(ids) <= 24 and ids[0] == 2 and ids[-1] == 3
        a, b = ids[types == 0][1:-1], ids[types == 1][:-1]
        assert len(a) and len(b) and np.all(np.diff(a) == 1) and np.all(np.diff(b) == 1)
        label = int(instance["pair_labels"])
        same_document = document_of[a[0]] == document_of[b[0]]
        if objective == "bert":  # label 0: b follows a; label 1: b from another document
            assert (b[0] > a[-1] and same_document) if label == 0 else not same_document
        else:  # label 0: in order; label 1: swapped
            assert same_document and ((b[0] > a[-1]) if label == 0 else (a[0] > b[-1]))
        pair_labels.append(label)
    assert abs(np.mean(pair_labels) - 0.5) < 0.07


@pytest.mark.parametrize("objective", ["mlm", "lm", "bert", "albert"])
def test_resume_is_exact(numbered, objective: str) -> None:
    shards_dir = numbered[3]
    state, expected = first_batches(shards_dir, objective, 10, 5, seq_length=16, seed=7)
    stream = pretraining_stream(Shards.open(shards_dir), objective, seq_length=16, seed=7)
    batches = BatchIterator(stream, 4, 0)
    batches.load_state_dict(state)
    for want in expected:
        got = batches.next_batch()
        assert got.keys() == want.keys()
        for key in want:
            assert torch.equal(got[key], want[key]), key
    # Another seed gives another stream, and a state saved with one seed is refused by another.
    other = BatchIterator(pretraining_stream(Shards.open(shards_dir), objective, 16, seed=8), 4, 0)
    assert not torch.equal(
        other.next_batch()["input_ids"],
        first_batches(shards_dir, objective, 0, 1, seq_length=16, seed=7)[1][0]["input_ids"],
    )
    with pytest.raises(ConfigError, match="seed=7"):
        other.load_state_dict(state)


def test_resume_mid_document(numbered) -> None:
    shards_dir = numbered[3]
    stream = pretraining_stream(Shards.open(shards_dir), "bert", seq_length=12, seed=2)
    states, instances = [], []
    for _ in range(40):
        states.append(stream.state_dict())
        instances.append(next(stream))
    assert any(s["inner"] > 0 for s in states)  # some positions are inside a document
    for k in (5, 17, 33):
        fresh = pretraining_stream(Shards.open(shards_dir), "bert", seq_length=12, seed=2)
        fresh.load_state_dict(states[k])
        for want in instances[k : k + 3]:
            got = next(fresh)
            assert all(np.array_equal(got[key], want[key]) for key in want)


def test_ranks_share_out_the_windows(numbered) -> None:
    shards = Shards.open(numbered[3])
    streams = [pretraining_stream(shards, "lm", 16, rank=r, world_size=2) for r in (0, 1)]
    slots = streams[0].order.slots
    seen = [{tuple(next(s)["input_ids"].tolist()) for _ in range(slots)} for s in streams]
    assert not seen[0] & seen[1]
    assert len(seen[0]) + len(seen[1]) == streams[0].order.size


def test_collate_pads_and_stacks() -> None:
    instances = [
        {
            "input_ids": np.array([2, 7, 3]),
            "labels": np.array([-100, 7, -100]),
            "pair_labels": np.array(1),
        },
        {
            "input_ids": np.array([2, 3]),
            "labels": np.array([-100, -100]),
            "pair_labels": np.array(0),
        },
    ]
    batch = collate(instances, pad_id=9)
    assert batch["input_ids"].tolist() == [[2, 7, 3], [2, 3, 9]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[-100, 7, -100], [-100, -100, -100]]
    assert batch["pair_labels"].tolist() == [1, 0]
    assert all(t.dtype == torch.int64 for t in batch.values())


def test_real_chinese_corpus(tmp_path: Path) -> None:
    data = data_dir("corpora/CLUECorpusSmall_bert_sampled.txt", "vocab/google_zh_vocab.txt")
    corpus = data / "corpora" / "CLUECorpusSmall_bert_sampled.txt"
    sample = tmp_path / "sample.txt"
    sample.write_bytes(b"\n".join(corpus.read_bytes().split(b"\n")[:400]))
    vocab = data / "vocab" / "google_zh_vocab.txt"
    manifest = preprocess([sample], vocab, "bert", 64, tmp_path / "out", log=quiet)
    tokenizer = load_tokenizer(vocab)
    sentences = [s for d in read_documents(sample) for s in d]
    expected = [t for ids in tokenizer.encode_batch(sentences) for t in ids]
    assert manifest["counts"]["tokens"] == len(expected)
    assert np.fromfile(tmp_path / "out" / "tokens.bin", dtype="<u2").tolist() == expected
    batch = BatchIterator(pretraining_stream(Shards.open(tmp_path / "out")), 8, 0).next_batch()
    assert batch["input_ids"].shape[0] == 8 and batch["input_ids"].shape[1] <= 64


def test_missing_data_mirror_or_dev_dependency_fails_in_strict_mode(tmp_path, monkeypatch) -> None:
    # CI sets PRETRAINKIT_STRICT_TESTS=1: what would be a skip on a laptop is a failure there.
    monkeypatch.setenv("PRETRAINKIT_DATA", str(tmp_path / "nowhere"))
    monkeypatch.delenv("PRETRAINKIT_STRICT_TESTS", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"no data folder found \(\$PRETRAINKIT_DATA"):
        data_dir("sst2/train.tsv")
    with pytest.raises(pytest.skip.Exception, match="no_such_module_xyz is not installed"):
        require("no_such_module_xyz")
    monkeypatch.setenv("PRETRAINKIT_STRICT_TESTS", "1")
    with pytest.raises(pytest.fail.Exception, match=r"nowhere.*PRETRAINKIT_STRICT_TESTS=1"):
        data_dir("sst2/train.tsv")
    with pytest.raises(pytest.fail.Exception, match="no_such_module_xyz .*STRICT_TESTS=1"):
        require("no_such_module_xyz")
    (tmp_path / "nowhere").mkdir()
    with pytest.raises(pytest.fail.Exception, match=r"lacks: sst2/train\.tsv"):
        data_dir("sst2/train.tsv")
    assert require("json").loads("[1]") == [1]  # present: the module itself
