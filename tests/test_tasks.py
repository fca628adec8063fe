"""Classification data: the TSV reader and its errors, the training stream, evaluation batches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import data_dir

from pretrainkit.data import BatchIterator
from pretrainkit.errors import DataError
from pretrainkit.tasks.regression import read_regression_file, scores_of
from pretrainkit.tasks.tsv import (
    ClassificationData,
    ClassificationStream,
    classification_batches,
    label_set_of,
    read_classification_tsv,
)
from pretrainkit.tokenization import Tokenizer, load_tokenizer

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "movie", "was", "great", "bad", "."]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    vocab = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab.write_text("\n".join(WORDS) + "\n")
    return load_tokenizer(vocab)


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, str):
        text = text.encode("utf-8")
    path.write_bytes(text)
    return path


def reviews(rows: int) -> str:
    lines = ["text_a\tlabel"]  # the columns may come in any order
    for i in range(rows):
        lines.append(("the movie was great ." if i % 2 else "the movie was bad") + f"\t{i % 3}")
    return "\n".join(lines) + "\n"


# --- reading -------------------------------------------------------------------------------
def test_read_pairs_and_prediction_files(tmp_path: Path) -> None:
    pairs = write(tmp_path / "pairs.tsv", "label\ttext_a\ttext_b\r\n1\ta b\tc\r\n0\td\t\r\n")
    data = read_classification_tsv(pairs)
    assert (data.texts_a, data.texts_b, data.labels) == (["a b", "d"], ["c", ""], ["1", "0"])
    unlabelled = write(tmp_path / "predict.tsv", "\ufefftext_a\nfirst\n\nthird\n")
    data = read_classification_tsv(unlabelled, require_labels=False)
    assert (data.texts_a, data.texts_b, data.labels) == (["first", "", "third"], None, None)
    assert len(data) == 3  # every row is kept, blank ones too, so predictions line up


def test_label_set_sorting() -> None:
    data = ClassificationData(Path("x.tsv"), ["t"] * 5, None, ["10", "2", "0", "1", "2"])
    assert label_set_of(data) == ["0", "1", "2", "10"]
    data.labels = ["neg", "pos", "neutral"]
    assert label_set_of(data) == ["neg", "neutral", "pos"]
    data.labels = ["-1", "0.5", "0"]
    assert label_set_of(data) == ["-1", "0", "0.5"]


BAD_FILES = {
    "no_header.tsv": (
        "1\tgood film\n",
        r"no_header\.tsv:1: unknown column '1'.*label<TAB>text_a.*without a header needs its "
        r"columns named \(columns=label,text_a\)",
    ),
    "typo.tsv": (
        "label\ttext_b\ttxet_a\n",
        r"typo\.tsv:1: unknown column 'txet_a' \(did you mean 'text_a'",
    ),
    "fields.tsv": ("label\ttext_a\n1\tok\n0\ttoo\tmany\n", r"fields\.tsv:3: expected 2 .*got 3"),
    "latin1.tsv": (b"label\ttext_a\n1\tok\n0\tcaf\xe9\n", r"latin1\.tsv:3: not UTF-8"),
    "empty.tsv": ("", r"empty\.tsv: file is empty"),
    "header_only.tsv": ("label\ttext_a\n", r"header_only\.tsv:2: .*no rows"),
    "no_label.tsv": ("text_a\nhello\n", r"no_label\.tsv:1: the header lacks the label column"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_files_name_file_and_line(tmp_path: Path, name: str) -> None:
    content, message = BAD_FILES[name]
    with pytest.raises(DataError, match=message):
        read_classification_tsv(write(tmp_path / name, content))


def test_unknown_label(tmp_path: Path) -> None:
    path = write(tmp_path / "dev.tsv", "label\ttext_a\n0\ta\n1\tb\n2\tc\n")
    with pytest.raises(DataError, match=r"dev\.tsv:4: label '2' is not one of the labels: 0, 1"):
        read_classification_tsv(path, label_set=["0", "1"])
    with pytest.raises(DataError, match="file not found"):
        read_classification_tsv(tmp_path / "missing.tsv")


# --- streams and batches ----------------------------------------------------------------------
def test_stream_instances_and_epochs(tmp_path: Path, tokenizer: Tokenizer) -> None:
    data = read_classification_tsv(write(tmp_path / "train.tsv", reviews(9)))
    labels = label_set_of(data)
    stream = ClassificationStream(data, tokenizer, labels, seq_length=6, seed=0)
    epoch = [next(stream) for _ in range(9)]
    bad = [2, 5, 6, 7, 9, 3]  # [CLS] the movie was bad [SEP]
    great = [2, 5, 6, 7, 8, 3]  # truncated to 6: the final "." is dropped
    seen = sorted((inst["input_ids"].tolist(), int(inst["labels"])) for inst in epoch)
    expected = sorted((great if i % 2 else bad, i % 3) for i in range(9))
    assert seen == expected
    assert all(inst["token_type_ids"].tolist() == [0] * 6 for inst in epoch)
    again = ClassificationStream(data, tokenizer, labels, seq_length=6, seed=0)
    assert [next(again)["labels"] for _ in range(9)] == [inst["labels"] for inst in epoch]
    other = ClassificationStream(data, tokenizer, labels, seq_length=6, seed=1)
    assert [int(next(other)["labels"]) for _ in range(9)] != [int(i["labels"]) for i in epoch]


def test_stream_resume_is_exact(tmp_path: Path, tokenizer: Tokenizer) -> None:
    data = read_classification_tsv(write(tmp_path / "train.tsv", reviews(23)))
    labels = label_set_of(data)

    def batches() -> BatchIterator:
        stream = ClassificationStream(data, tokenizer, labels, seq_length=8, seed=4)
        return BatchIterator(stream, 3, tokenizer.pad_id)

    first = batches()
    for _ in range(10):
        first.next_batch()
    state = json.loads(json.dumps(first.state_dict()))
    expected = [first.next_batch() for _ in range(5)]
    resumed = batches()
    resumed.load_state_dict(state)
    for want in expected:
        got = resumed.next_batch()
        assert all(torch.equal(got[key], want[key]) for key in want)
        assert want["labels"].shape == (3,)


def test_batches_in_order_with_dynamic_padding(tmp_path: Path, tokenizer: Tokenizer) -> None:
    path = write(
        tmp_path / "dev.tsv", "label\ttext_a\ttext_b\n1\tgreat\tthe movie\n0\tbad\tbad\n2\t.\t.\n"
    )
    data = read_classification_tsv(path)
    batches = list(classification_batches(data, tokenizer, ["0", "1", "2"], 16, batch_size=2))
    assert [b["input_ids"].shape for b in batches] == [(2, 6), (1, 5)]
    assert batches[0]["input_ids"].tolist() == [[2, 8, 3, 5, 6, 3], [2, 9, 3, 9, 3, 0]]
    assert batches[0]["token_type_ids"].tolist() == [[0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 0]]
    assert batches[0]["attention_mask"].tolist() == [[1] * 6, [1] * 5 + [0]]
    assert [b["labels"].tolist() for b in batches] == [[1, 0], [2]]
    unlabelled = read_classification_tsv(
        write(tmp_path / "x.tsv", "text_a\nthe movie\n"), require_labels=False
    )
    (batch,) = classification_batches(unlabelled, tokenizer, None, 16, batch_size=4)
    assert sorted(batch) == ["attention_mask", "input_ids", "token_type_ids"]


def test_stream_needs_labels(tmp_path: Path, tokenizer: Tokenizer) -> None:
    data = read_classification_tsv(write(tmp_path / "p.tsv", "text_a\na\n"), require_labels=False)
    with pytest.raises(DataError, match=r"p\.tsv: has no labels"):
        ClassificationStream(data, tokenizer, ["0"], 8, 0)


# --- files without a header: columns named by the caller ---------------------------------------
def test_headerless_files_with_columns(tmp_path: Path, tokenizer: Tokenizer) -> None:
    single = write(tmp_path / "sst.tsv", "\ufeff1\tthe movie was great\n0\tbad\r\n")
    data = read_classification_tsv(single, columns=("label", "text_a"))
    assert (data.texts_a, data.texts_b, data.labels) == (
        ["the movie was great", "bad"],
        None,
        ["1", "0"],
    )
    assert data.first_line == 1
    # One comma-separated string works too (what --columns passes on).
    again = read_classification_tsv(single, columns="label, text_a")
    assert (again.texts_a, again.labels) == (data.texts_a, data.labels)
    pairs = write(tmp_path / "pairs.tsv", "a b\tneg\tc\n\tpos\td\n")
    data = read_classification_tsv(pairs, columns=["text_a", "label", "text_b"])
    assert (data.texts_a, data.texts_b, data.labels) == (["a b", ""], ["c", "d"], ["neg", "pos"])
    texts = write(tmp_path / "texts.tsv", "first\nlabel\n")  # a text may be "label"
    data = read_classification_tsv(texts, require_labels=False, columns=("text_a",))
    assert (data.texts_a, data.labels) == (["first", "label"], None)
    # Lines are counted from 1: the second row is line 2, in every error about it.
    with pytest.raises(DataError, match=r"sst\.tsv:2: label '0' is not one of the labels: 1"):
        read_classification_tsv(single, label_set=["1"], columns=("label", "text_a"))
    data = read_classification_tsv(single, columns=("label", "text_a"))
    with pytest.raises(DataError, match=r"sst\.tsv:2: label '0' is not one of the labels: 1"):
        ClassificationStream(data, tokenizer, ["1"], 8)


BAD_COLUMNS = {
    "unknown": (
        ("label", "txt_a"),
        r"rows\.tsv: columns: unknown column name 'txt_a' \(did you mean 'text_a'\?\); "
        r"allowed names: label, text_a, text_b$",
    ),
    "empty-name": ("label,,text_a", r"unknown column name ''; allowed names: label, text_a"),
    "twice": (("label", "text_a", "label"), r"columns: 'label' is named twice"),
    "no-text": (("label", "text_b"), r"columns: \['label', 'text_b'\] lacks 'text_a'"),
    "no-label": (("text_a",), r"columns: \['text_a'\] lacks 'label'; allowed names"),
    "field-count": (
        ("label", "text_a", "text_b"),
        r"rows\.tsv:1: expected 3 tab-separated fields \(label, text_a, text_b\), got 2",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_COLUMNS))
def test_bad_columns_name_the_problem(tmp_path: Path, case: str) -> None:
    columns, message = BAD_COLUMNS[case]
    path = write(tmp_path / "rows.tsv", "1\tfine\n")
    with pytest.raises(DataError, match=message):
        read_classification_tsv(path, columns=columns)
    if case != "field-count":  # regression files check the names the same way
        with pytest.raises(DataError, match=message.replace("rows\\.tsv", "rows\\.csv")):
            read_regression_file(write(tmp_path / "rows.csv", "1,fine\n"), columns=columns)


def test_columns_on_a_file_with_a_header_or_no_rows(tmp_path: Path) -> None:
    header = write(tmp_path / "h.tsv", "label\ttext_a\n1\tfine\n")
    with pytest.raises(DataError, match=r"h\.tsv:1: line 1 is a header \(label, text_a\)"):
        read_classification_tsv(header, columns=("label", "text_a"))
    empty = write(tmp_path / "e.tsv", "")
    with pytest.raises(DataError, match=r"e\.tsv: file is empty; expected rows label<TAB>text_a"):
        read_classification_tsv(empty, columns=("label", "text_a"))
    bad = write(tmp_path / "b.tsv", "1\tok\n\tno label\n")
    with pytest.raises(DataError, match=r"b\.tsv:2: the label is empty"):
        read_classification_tsv(bad, columns=("label", "text_a"))


def test_regression_files_with_columns(tmp_path: Path) -> None:
    tsv = write(tmp_path / "sts.tsv", "a\tb\t4.5\nc\td\t0\n")
    data = read_regression_file(tsv, columns=("text_a", "text_b", "label"))
    assert (data.texts_a, data.texts_b, data.labels) == (["a", "c"], ["b", "d"], ["4.5", "0"])
    assert scores_of(data).tolist() == [4.5, 0.0]
    bad = write(tmp_path / "bad.tsv", "a\t1\nb\thigh\n")
    with pytest.raises(DataError, match=r"bad\.tsv:2: score 'high' is not a number"):
        read_regression_file(bad, columns=("text_a", "label"))
    # CSV: STS-B's order by default, any other with columns; a row may span quoted lines.
    csv = write(tmp_path / "s.csv", '2.5,"two\nlines"\n-1,x\n')
    data = read_regression_file(csv, columns="label,text_a")
    assert (data.texts_a, data.texts_b, data.labels) == (["two\nlines", "x"], None, ["2.5", "-1"])
    spans = write(tmp_path / "spans.csv", 'a,"b\nc",1\nd,e,NaN\n')
    with pytest.raises(DataError, match=r"spans\.csv:3: score 'NaN' is not a finite"):
        read_regression_file(spans)
    # Files to predict on have no score column.
    texts = write(tmp_path / "p.csv", "a,b\nc,d\n")
    data = read_regression_file(texts, require_labels=False, columns=("text_a", "text_b"))
    assert (data.texts_a, data.texts_b, data.labels) == (["a", "c"], ["b", "d"], None)
    with pytest.raises(DataError, match=r"p\.csv:1: expected 3 comma-separated fields"):
        read_regression_file(texts)


# --- the data mirror ---------------------------------------------------------------------------
def test_real_sst2() -> None:
    data_root = data_dir("sst2/train.tsv", "sst2/dev.tsv", "vocab/google_uncased_en_vocab.txt")
    train_file = data_root / "sst2" / "train.tsv"
    rows = train_file.read_text(encoding="utf-8").splitlines()
    # As distributed: `label<TAB>sentence`, no header; read as it is.
    data = read_classification_tsv(train_file, columns=("label", "text_a"))
    assert len(data) == len(rows) == 6920 and data.texts_b is None
    assert label_set_of(data) == ["0", "1"]
    assert data.labels is not None and data.labels.count("1") == 3610
    assert data.texts_a[0] == rows[0].split("\t", 1)[1]
    dev = read_classification_tsv(
        data_root / "sst2" / "dev.tsv", label_set=["0", "1"], columns=("label", "text_a")
    )
    assert len(dev) == 872 and dev.labels is not None and dev.labels.count("1") == 444
    tokenizer = load_tokenizer(data_root / "vocab" / "google_uncased_en_vocab.txt")
    batch = next(classification_batches(data, tokenizer, ["0", "1"], 64, 32))
    assert batch["input_ids"][:, 0].eq(101).all() and batch["input_ids"].shape[1] <= 64
    lengths = batch["attention_mask"].sum(1)
    assert lengths.max() == batch["input_ids"].shape[1]  # padded to the longest, no further
    ends = batch["input_ids"].gather(1, (lengths - 1)[:, None])
    assert ends.eq(102).all()
    assert batch["labels"].tolist() == [int(r.split("\t")[0]) for r in rows[:32]]


def test_real_stsb() -> None:
    path = data_dir("stsb-multi-mt/stsb-en-dev.csv") / "stsb-multi-mt" / "stsb-en-dev.csv"
    data = read_regression_file(path)
    assert len(data) == 1500 and data.texts_b is not None
    assert data.texts_a[0] == "A man with a hard hat is dancing."
    assert data.texts_b[0] == "A man wearing a hard hat is dancing."
    scores = scores_of(data)
    assert (scores.min(), scores.max()) == (0.0, 5.0)
    assert scores[:2].tolist() == [5.0, 4.75]
