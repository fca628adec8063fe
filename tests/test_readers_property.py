"""Readers of user files never crash: random bytes and random YAML / TSV / CSV / JSONL either
give a valid result or one of pretrainkit's own errors (a PretrainkitError naming the file),
never a traceback of another type. Plus the exact errors of the inputs that used to crash.

PRETRAINKIT_FUZZ_EXAMPLES=N runs N examples per property (default 150, derandomized so that
a run is reproducible).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pretrainkit.cli.options import read_config_file
from pretrainkit.config import ModelConfig, load_model_config
from pretrainkit.data.corpus import read_documents
from pretrainkit.errors import ConfigError, DataError, PretrainkitError
from pretrainkit.tasks.regression import read_regression_file
from pretrainkit.tasks.tsv import COLUMNS, ClassificationData, read_classification_tsv

FUZZ = settings(
    max_examples=int(os.environ.get("PRETRAINKIT_FUZZ_EXAMPLES", "150")),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def outcome(read: Callable[[], Any]) -> Any:
    """``read()``'s result, or None when it raised a PretrainkitError; anything else escapes."""
    try:
        return read()
    except PretrainkitError as error:
        assert str(error).strip(), "an error must say what is wrong"
        return None


# --- strategies --------------------------------------------------------------------------------
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**320)  # beyond float's range
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
# Nested plain values, as a YAML file may hold them.
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# Pieces that make YAML parsers and constructors stumble.
YAML_PIECES = [
    "a:", "- ", "[", "]", "{", "}", ",", ": ", "? ", "|", ">", "&x ", "*x", "---", "...",
    "%YAML 1.1", "!!binary ", "!!timestamp ", "!!float ", "!!int ", "!!python/object ", "0x",
    "2023-13-45", "2001-12-14t21:59:43.10-99:99", ".nan", ".inf", "-.inf", "1e400", "~", "\t",
    "'", '"', "\\ud800", "hidden_size:", "encoder:", "  num_heads:", "targets:", "vocab_size: ",
    "lr: ", "steps: ", "\n", "\n  ", "\ufeff", "\x00", "12", "1" * 5000,
]  # fmt: skip
YAML_TEXT = st.lists(st.sampled_from(YAML_PIECES) | st.text(max_size=6), max_size=25).map("".join)
YAML_DOCS = VALUES.map(lambda v: yaml.safe_dump(v)) | YAML_TEXT

TINY = {
    "vocab_size": 100,
    "hidden_size": 32,
    "encoder": {"num_layers": 1, "num_heads": 2, "ffn_size": 64},
}
FIELDS = [
    ("vocab_size",), ("hidden_size",), ("name",), ("share_embedding",), ("targets",),
    ("embedding", "parts"), ("embedding", "max_positions"), ("embedding", "position_offset"),
    ("embedding", "dropout"), ("embedding", "norm_eps"), ("embedding", "image_size"),
    ("embedding", "patch_size"), ("embedding", "num_segments"), ("encoder", "num_heads"),
    ("encoder", "num_kv_heads"), ("encoder", "head_dim"), ("encoder", "dropout"),
    ("encoder", "rotary_base"), ("encoder", "attention_scale"), ("encoder", "norm"),
    ("encoder", "relative_buckets"), ("decoder",), ("tgt_embedding",), ("encoder",),
]  # fmt: skip


@st.composite
def near_valid_configs(draw: st.DrawFn) -> str:
    """A valid tiny config with a few fields set to random values: reaches the range checks."""
    config = json.loads(json.dumps(TINY))
    for path in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3)):
        node = config
        for key in path[:-1]:
            if not isinstance(node.get(key), dict):  # an earlier draw replaced the section
                node[key] = {}
            node = node[key]
        node[path[-1]] = draw(VALUES)
    return yaml.safe_dump(config)


def tabbed(pieces: list[bytes], separator: bytes) -> st.SearchStrategy[bytes]:
    """Files of a few lines, each a few fields drawn from ``pieces``."""
    line = st.lists(st.sampled_from(pieces), max_size=4).map(separator.join)
    return st.lists(line, max_size=6).map(b"\n".join)


TSV_PIECES = [
    b"label", b"text_a", b"text_b", b"lable", b"1", b"0", b"a b", b"", b"\r", b"\xff", b"\xe9",
    b"\xef\xbb\xbf", b"\xef\xbb\xbflabel", b"\xed\xa0\x80", b"\x00", b" ", b"2.5", b"nan",
]  # fmt: skip
CSV_PIECES = [
    b'"', b"a", b'"a,b"', b'"x\ny"', b'"un', b"1.5", b"-2", b"nan", b"inf", b"1e39", b"", b"\r",
    b"\x00", b"\xff", b"0x1", b"1_0", b" 3 ",
]  # fmt: skip
JSON_LINES = (
    VALUES.map(json.dumps)
    | st.text(max_size=40).map(lambda t: json.dumps({"text": t}))
    | st.text(max_size=40).map(lambda t: json.dumps({"text": t}, ensure_ascii=False))
    | st.sampled_from(['{"text": "\\ud800"}', '{"text": 1e999}', "{", "[[[]]]", "", "  ", "null"])
    | st.text(max_size=20)
)
JSONL = st.lists(JSON_LINES, max_size=6).map(
    lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass")
)
COLUMN_SPECS = (
    st.none()
    | st.lists(st.sampled_from([*COLUMNS, "lable", "", "text_c"]), max_size=4)
    | st.text(max_size=20)
)


# --- checks of a valid result -------------------------------------------------------------------
def check_rows(data: ClassificationData) -> None:
    assert len(data) >= 1
    columns = [data.texts_a, data.texts_b, data.labels]
    for column in columns:
        if column is not None:
            assert len(column) == len(data) and all(isinstance(v, str) for v in column)
    if data.labels is not None:
        assert all(data.labels) or data.path.suffix == ".csv"


def check_documents(documents: list[list[str]]) -> None:
    for document in documents:
        assert document, "an empty document"
        for sentence in document:
            assert sentence and sentence == sentence.strip()
            sentence.encode("utf-8")  # no lone surrogates


# --- config files -------------------------------------------------------------------------------
@FUZZ
@given(
    content=st.binary(max_size=300) | YAML_DOCS.map(lambda t: t.encode("utf-8", "surrogatepass"))
)
def test_model_config_file_from_random_bytes(folder: Path, content: bytes) -> None:
    path = folder / "model.yaml"
    path.write_bytes(content)
    for read in (lambda: ModelConfig.load(path), lambda: load_model_config(path)):
        config = outcome(read)
        assert config is None or isinstance(config, ModelConfig)


@FUZZ
@given(text=near_valid_configs())
def test_model_config_file_with_random_values(folder: Path, text: str) -> None:
    path = folder / "model.yaml"
    path.write_text(text, encoding="utf-8")
    config = outcome(lambda: load_model_config(path))
    if config is not None:
        assert isinstance(config, ModelConfig)
        assert load_model_config(config.to_dict()) == config  # what loads, saves and reloads


@FUZZ
@given(
    content=st.binary(max_size=300) | YAML_DOCS.map(lambda t: t.encode("utf-8", "surrogatepass"))
)
def test_cli_config_file_from_random_bytes(folder: Path, content: bytes) -> None:
    path = folder / "run.yaml"
    path.write_bytes(content)
    options = outcome(lambda: read_config_file(str(path)))
    if options is not None:
        assert isinstance(options, dict) and all(isinstance(k, str) for k in options)


# --- data files ---------------------------------------------------------------------------------
@FUZZ
@given(content=st.binary(max_size=400) | JSONL, suffix=st.sampled_from([".txt", ".jsonl"]))
def test_corpus_reader(folder: Path, content: bytes, suffix: str) -> None:
    path = folder / f"corpus{suffix}"
    path.write_bytes(content)
    documents = outcome(lambda: list(read_documents(path)))
    if documents is not None:
        check_documents(documents)
    skipped = list(read_documents(path, skip_bad_lines=True))  # never raises on a bad line
    check_documents(skipped)


@FUZZ
@given(content=st.binary(max_size=300) | tabbed(TSV_PIECES, b"\t"), columns=COLUMN_SPECS)
def test_classification_reader(folder: Path, content: bytes, columns: Any) -> None:
    path = folder / "task.tsv"
    path.write_bytes(content)
    for require_labels in (True, False):
        data = outcome(
            lambda labels=require_labels: read_classification_tsv(
                path, require_labels=labels, columns=columns
            )
        )
        if data is not None:
            check_rows(data)
            assert data.first_line == (2 if columns is None else 1)


@FUZZ
@given(
    content=st.binary(max_size=300) | tabbed(CSV_PIECES, b",") | tabbed(TSV_PIECES, b"\t"),
    suffix=st.sampled_from([".csv", ".tsv"]),
    columns=COLUMN_SPECS,
)
def test_regression_reader(folder: Path, content: bytes, suffix: str, columns: Any) -> None:
    path = folder / f"scores{suffix}"
    path.write_bytes(content)
    for require_labels in (True, False):
        data = outcome(
            lambda labels=require_labels: read_regression_file(
                path, require_labels=labels, columns=columns
            )
        )
        if data is not None:
            check_rows(data)
            if data.labels is not None:
                assert all(abs(float(label)) < 3.5e38 for label in data.labels)


# --- round trips: what a valid file holds is what is read -----------------------------------------
FIELD_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\t\n\r\ufeff"), max_size=10
)


@FUZZ
@given(
    rows=st.lists(
        st.tuples(FIELD_TEXT.filter(bool), FIELD_TEXT, FIELD_TEXT), min_size=1, max_size=5
    ),
    headerless=st.booleans(),
)
def test_classification_rows_are_read_back_exactly(
    folder: Path, rows: list[tuple[str, str, str]], headerless: bool
) -> None:
    names = ("text_b", "label", "text_a")
    lines = ["\t".join((b, label, a)) for label, a, b in rows]
    if headerless:
        # A first row that spells the column names would be taken for a header (and refused).
        rows = [r for r in rows if (r[2], r[0], r[1]) != names] or [("0", "x", "y")]
        lines = ["\t".join((b, label, a)) for label, a, b in rows]
    else:
        lines.insert(0, "\t".join(names))
    path = folder / "rows.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    data = read_classification_tsv(path, columns=names if headerless else None)
    assert data.labels == [r[0] for r in rows]
    assert data.texts_a == [r[1] for r in rows]
    assert data.texts_b == [r[2] for r in rows]


# --- the inputs that crashed, pinned with their messages -------------------------------------------
CRASHED_CONFIGS = {
    # PyYAML's safe constructors raise ValueError / AttributeError / RecursionError on these.
    "date.yaml": ("hidden_size: 2023-13-45\n", r"date\.yaml: not valid YAML: .*month must be"),
    "stamp.yaml": ("a: !!timestamp x\n", r"stamp\.yaml: not valid YAML"),
    "hex.yaml": ("a: !!int 0x\n", r"hex\.yaml: not valid YAML"),
    "int.yaml": ("a: !!int\n", r"int\.yaml: not valid YAML"),
    "float.yaml": ("a: !!float t\n", r"float\.yaml: not valid YAML.*could not convert"),
    "deep.yaml": ("[" * 3000 + "]" * 3000, r"deep\.yaml: not valid YAML: nested too deeply"),
    "digits.yaml": ("vocab_size: " + "1" * 5000 + "\n", r"digits\.yaml: not valid YAML"),
    "latin1.yaml": (b"name: caf\xe9\n", r"latin1\.yaml: not UTF-8 \(byte offset 9\)"),
    # An integer beyond float's range for a float field (OverflowError in float()).
    "huge.yaml": (
        yaml.safe_dump({**TINY, "encoder": {**TINY["encoder"], "dropout": 10**400}}),
        r"encoder\.dropout: 1000.* is too large for a float",
    ),
    # NaN passed every range check (comparisons with NaN are false).
    "nan.yaml": (
        yaml.safe_dump({**TINY, "embedding": {"dropout": float("nan")}}),
        r"dropout: nan is not a finite number",
    ),
    "eps.yaml": (
        yaml.safe_dump({**TINY, "encoder": {**TINY["encoder"], "norm_eps": float("inf")}}),
        r"norm_eps: inf is not a finite number",
    ),
    "list.yaml": ("- 1\n- 2\n", r"list\.yaml: expected a mapping of keys to values, got list"),
}


@pytest.mark.parametrize("name", sorted(CRASHED_CONFIGS))
def test_config_inputs_that_crashed(tmp_path: Path, name: str) -> None:
    content, message = CRASHED_CONFIGS[name]
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    for read in (ModelConfig.load, load_model_config):
        with pytest.raises(ConfigError, match=message):
            read(path)


def test_overrides_on_a_file_that_is_not_a_mapping(tmp_path: Path) -> None:
    # apply_overrides indexed the list with a string: TypeError.
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"overrides vocab_size: expected a mapping .*got list"):
        load_model_config(path, {"vocab_size": 1})


CRASHED_CORPORA = {
    "digits.jsonl": ('{"text": 1' + "0" * 5000 + "}\n", r"digits\.jsonl:1: not valid JSON \(Exceeds"),
    "deep.jsonl": ("[" * 100_000 + "]" * 100_000 + "\n", r"deep\.jsonl:1: not valid JSON"),
    "surrogate.jsonl": ('{"text": "ok"}\n{"text": "a \\ud800 b"}\n', r"surrogate\.jsonl:2: .*lone surrogate"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CRASHED_CORPORA))
def test_corpus_inputs_that_crashed(tmp_path: Path, name: str) -> None:
    content, message = CRASHED_CORPORA[name]
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        list(read_documents(path))
    assert list(read_documents(path, skip_bad_lines=True)) == (
        [["ok"]] if name == "surrogate.jsonl" else []
    )


def test_task_files_that_crashed(tmp_path: Path) -> None:
    # A folder where a file was expected: IsADirectoryError escaped.
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataError, match=r"folder: is a folder, expected a file"):
        read_classification_tsv(tmp_path / "folder")
    # A CSV field over the csv module's limit (131,072 characters): csv.Error escaped.
    long = tmp_path / "long.csv"
    long.write_text('a,b,1\nc,"' + "x" * 200_000 + '",2\n')
    with pytest.raises(DataError, match=r"long\.csv:2: not valid CSV \(field larger than"):
        read_regression_file(long)
    # A score beyond float32: inf in the batches.
    huge = tmp_path / "huge.csv"
    huge.write_text("a,b,1\nc,d,1e39\n")
    with pytest.raises(DataError, match=r"huge\.csv:2: score '1e39' is not a finite float32"):
        read_regression_file(huge)
    # A regression file to predict on (no label column) was refused: "has no labels".
    unlabelled = tmp_path / "predict.tsv"
    unlabelled.write_text("text_a\ttext_b\na\tb\n")
    data = read_regression_file(unlabelled, require_labels=False)
    assert (data.texts_a, data.texts_b, data.labels) == (["a"], ["b"], None)
