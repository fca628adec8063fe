"""Tokenizers: the real vocabularies of the data mirror, trained vocabularies, save/load, errors."""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path

import pytest
from helpers import data_dir

from pretrainkit.errors import ConfigError, DataError
from pretrainkit.tokenization import Tokenizer, load_tokenizer, train_tokenizer
from pretrainkit.tokenization.base import truncated_lengths


@pytest.fixture(scope="module")
def vocab_dir() -> Path:
    names = ("google_uncased_en_vocab.txt", "google_cased_en_vocab.txt", "google_zh_vocab.txt")
    names += ("huggingface_gpt2_vocab.txt", "cluecorpussmall_spm.model", "sentencepiece.bpe.model")
    return data_dir(*(f"vocab/{name}" for name in names)) / "vocab"


def write_corpus(path: Path, sentences: int = 1500, seed: int = 0) -> Path:
    """A reproducible toy language: 1,500 words made of 20 syllables, blank-line documents."""
    rng = random.Random(seed)
    syllables = "ka to ri mu sen dal or ip qua lem zo fe na bri ust el gor wi ped ax".split()
    words = ["".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(1500)]
    lines = []
    for i in range(sentences):
        common = words[: rng.randint(20, len(words))]  # skews the counts towards early words
        lines.append(" ".join(rng.choices(common, k=rng.randint(4, 15))).capitalize() + ".")
        if i % 7 == 6:
            lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt")


# --- real vocabularies -------------------------------------------------------------------
def test_bert_uncased_vocab(vocab_dir: Path) -> None:
    tok = load_tokenizer(vocab_dir / "google_uncased_en_vocab.txt")
    assert (tok.kind, tok.vocab_size, tok.lowercase) == ("wordpiece", 30522, True)
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 100, 101, 102, 103)
    assert (tok.bos_id, tok.eos_id) == (101, 102)
    ids = tok.encode("Hello world!")
    assert ids == [7592, 2088, 999]
    assert tok.decode(ids) == "hello world!"
    assert tok.build_inputs(ids) == ([101, 7592, 2088, 999, 102], [0] * 5)


def test_bert_cased_and_chinese_vocab(vocab_dir: Path) -> None:
    cased = load_tokenizer(vocab_dir / "google_cased_en_vocab.txt")
    assert cased.lowercase is False
    assert cased.decode(cased.encode("Hello world")) == "Hello world"
    chinese = load_tokenizer(vocab_dir / "google_zh_vocab.txt")
    assert chinese.lowercase is True and chinese.vocab_size == 21128
    assert chinese.encode("你好世界") == [872, 1962, 686, 4518]  # one token per character
    assert load_tokenizer(vocab_dir / "google_zh_vocab.txt", lowercase=False).lowercase is False


def test_gpt2_vocab_and_merges_files(vocab_dir: Path) -> None:
    # The mirror's GPT-2 files are RoBERTa's: one token a line in fairseq order, with its
    # five specials, so "Hello world" gets RoBERTa's ids (GPT-2's vocab.json would give
    # [15496, 995]; that layout is covered by the synthetic test below).
    tok = load_tokenizer(vocab_dir / "huggingface_gpt2_vocab.txt")
    assert (tok.kind, tok.vocab_size) == ("bpe", 50265)
    assert tok.encode("Hello world") == [31414, 232]
    assert (tok.cls_id, tok.pad_id, tok.sep_id, tok.unk_id, tok.mask_id) == (0, 1, 2, 3, 50264)
    text = "Byte-level BPE keeps  every byte: ünïcode, 你好!"
    assert tok.decode(tok.encode(text)) == text


def test_gpt2_json_with_only_endoftext(tmp_path: Path) -> None:
    pieces = ["H", "e", "l", "o", "Ġ", "w", "r", "d", "ll", "He", "Hell", "Hello"]
    pieces += ["Ġw", "or", "Ġwor", "ld", "Ġworld", "<|endoftext|>"]
    (tmp_path / "vocab.json").write_text(json.dumps({p: i for i, p in enumerate(pieces)}))
    merges = ["l l", "H e", "He ll", "Hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld"]
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    for path in (tmp_path, tmp_path / "vocab.json"):
        tok = load_tokenizer(path)
        assert tok.encode("Hello world") == [11, 16]
        assert tok.mask_id is None
        assert {tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.bos_id, tok.eos_id} == {17}


def test_sentencepiece_models(vocab_dir: Path) -> None:
    chinese = load_tokenizer(vocab_dir / "cluecorpussmall_spm.model")
    assert chinese.kind == "unigram" and chinese.vocab_size == 100000
    # This model has BERT's specials as pieces: they are used for cls/sep/mask.
    assert (chinese.pad_id, chinese.unk_id, chinese.cls_id, chinese.sep_id) == (0, 1, 2, 3)
    assert chinese.mask_id == 4
    english = load_tokenizer(vocab_dir / "sentencepiece.bpe.model")
    assert (english.bos_id, english.pad_id, english.eos_id, english.unk_id) == (0, 1, 2, 3)
    assert (english.cls_id, english.sep_id, english.mask_id) == (0, 2, None)
    assert english.decode(english.encode("the weather is nice")) == "the weather is nice"
    clone = pickle.loads(pickle.dumps(english))
    assert clone.encode("the weather is nice") == english.encode("the weather is nice")


def test_saved_copies_give_identical_ids(vocab_dir: Path, tmp_path: Path) -> None:
    text = ["Hello world, how are you?", "你好世界", "the weather is nice"]
    for name in (
        "google_uncased_en_vocab.txt",
        "huggingface_gpt2_vocab.txt",
        "sentencepiece.bpe.model",
    ):
        original = load_tokenizer(vocab_dir / name)
        original.save(tmp_path / name)
        copy = Tokenizer.load(tmp_path / name)
        assert copy.encode_batch(text) == original.encode_batch(text)
        assert copy.special_tokens == original.special_tokens
        assert (copy.kind, copy.vocab_size, copy.lowercase) == (
            original.kind,
            original.vocab_size,
            original.lowercase,
        )


# --- trained vocabularies ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "size", "specials"),
    [
        ("wordpiece", 300, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]),
        ("bpe", 400, ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]),
        ("unigram", 300, ["<pad>", "<unk>", "<s>", "</s>", "<mask>"]),
    ],
)
def test_train_each_kind(
    corpus: Path, tmp_path: Path, kind: str, size: int, specials: list
) -> None:
    tok = train_tokenizer([corpus], kind, size, tmp_path / "tok")
    assert tok.kind == kind
    assert abs(tok.vocab_size - size) <= size // 20
    # The specials take the first ids, in the order each family uses.
    assert [tok.token_to_id(t) for t in specials] == [0, 1, 2, 3, 4]
    lines = corpus.read_text().splitlines()[:50]
    ids = tok.encode(lines[0])
    assert 0 < len(ids) < len(lines[0]) and all(i > 4 for i in ids)
    assert tok.decode(ids) == lines[0].lower()
    loaded = load_tokenizer(tmp_path / "tok")
    assert loaded.encode_batch(lines) == tok.encode_batch(lines)
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == sorted(
        ["tokenizer_config.json", "spm.model" if kind == "unigram" else "tokenizer.json"]
    )


def test_train_cased_from_jsonl(tmp_path: Path) -> None:
    lines = write_corpus(tmp_path / "c.txt").read_text().splitlines()
    records = [json.dumps({"text": "\n".join(lines[i : i + 5])}) for i in range(0, len(lines), 5)]
    (tmp_path / "c.jsonl").write_text("\n".join(records) + "\n")
    tok = train_tokenizer(
        [tmp_path / "c.jsonl"], "wordpiece", 300, tmp_path / "tok", lowercase=False
    )
    assert tok.lowercase is False
    assert tok.decode(tok.encode("Kato rimu")) == "Kato rimu"


def test_train_errors_leave_nothing_behind(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "tok"
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(DataError, match="empty.txt.*no text"):
        train_tokenizer([empty], "wordpiece", 300, out)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"good line\n\nanother\n\xff\xfe broken\n")
    for kind in ("wordpiece", "unigram"):
        with pytest.raises(DataError, match=r"bad\.txt:4: not UTF-8"):
            train_tokenizer([corpus, bad], kind, 300, out)
    with pytest.raises(DataError, match="missing.txt"):
        train_tokenizer([tmp_path / "missing.txt"], "bpe", 400, out)
    with pytest.raises(ConfigError, match="did you mean 'wordpiece'"):
        train_tokenizer([corpus], "wordpeice", 300, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.txt", "empty.txt"]


# --- inputs and errors -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("lengths", "budget", "expected"),
    [((3, 2), 10, (3, 2)), ((9, 2), 6, (4, 2)), ((5, 5), 7, (4, 3)), ((5, 7), 9, (5, 4))],
)
def test_truncated_lengths_match_berts_loop(lengths, budget, expected) -> None:
    a, b = lengths
    while a + b > budget:  # the reference: drop one token from the longer side, ties from b
        a, b = (a - 1, b) if a > b else (a, b - 1)
    assert truncated_lengths(*lengths, budget) == (a, b) == expected


def small_vocab(directory: Path) -> Path:
    vocab = directory / "vocab.txt"
    vocab.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\n")
    return vocab


def test_build_inputs_pairs_and_truncation(tmp_path: Path) -> None:
    tok = load_tokenizer(small_vocab(tmp_path))
    ids, types = tok.build_inputs([11, 12, 13, 14, 15, 16], [17, 18], max_length=8)
    assert ids == [2, 11, 12, 13, 3, 17, 18, 3]
    assert types == [0, 0, 0, 0, 0, 1, 1, 1]
    assert tok.build_inputs([11, 12, 13], max_length=4) == ([2, 11, 12, 3], [0, 0, 0, 0])
    with pytest.raises(ConfigError, match="too small"):
        tok.build_inputs([1], [2], max_length=2)


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nowhere.txt: tokenizer file or folder not found"):
        load_tokenizer(tmp_path / "nowhere.txt")
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("[PAD]\n[UNK]\n[CLS]\nhello\n")
    with pytest.raises(
        DataError, match=r"vocab\.txt: .*lacks the special tokens \[SEP\], \[MASK\]"
    ):
        load_tokenizer(vocab)
    (tmp_path / "junk").mkdir()
    with pytest.raises(DataError, match="junk: no tokenizer found"):
        load_tokenizer(tmp_path / "junk")
    config = tmp_path / "saved"
    load_tokenizer(small_vocab(tmp_path / "junk")).save(config)
    (config / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(DataError, match="tokenizer_config.json:1: not valid JSON"):
        load_tokenizer(config)
