"""Reading pre-training corpora: plain text (blank line between documents) and JSONL."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pretrainkit.errors import DataError
from pretrainkit.fileio import open_input

_BLOCK = 1 << 20
_SURROGATE = re.compile(r"[\ud800-\udfff]")


@dataclass
class CorpusFile:
    """What was read from one corpus file; filled in while its documents are consumed."""

    path: Path
    bytes: int = 0
    sha256: str = ""
    lines: int = 0
    skipped_lines: int = 0


def read_documents(
    path: str | Path, skip_bad_lines: bool = False, info: CorpusFile | None = None
) -> Iterator[list[str]]:
    """Yield the documents of a corpus file, each a list of non-empty sentences.

    Plain text has one sentence a line and a blank line between documents. A `.jsonl` file
    holds one `{"text": ...}` document a line, its sentences separated by newlines.

    Args:
        path: the corpus file.
        skip_bad_lines: skip (and count in `info.skipped_lines`) lines that are not UTF-8 or
            not valid records instead of raising.
        info: receives size, SHA-256 and line counts; complete once the iterator is exhausted.

    Raises:
        DataError: naming the file and line of the first bad line, or a missing file.
    """
    path = Path(path)
    info = info if info is not None else CorpusFile(path)
    jsonl = path.suffix == ".jsonl"
    document: list[str] = []
    for number, raw in _raw_lines(path, info):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            _bad_line(
                f"not UTF-8 (byte {err.start} of the line)", path, number, skip_bad_lines, info
            )
            continue
        if jsonl:
            sentences = _jsonl_sentences(text, path, number, skip_bad_lines, info)
            if sentences:
                yield sentences
            continue
        text = text.strip()
        if text:
            document.append(text)
        elif document:
            yield document
            document = []
    if document:
        yield document


def iter_text_batches(paths: Iterable[str | Path], batch_size: int = 1000) -> Iterator[list[str]]:
    """Sentences of several corpus files in lists of `batch_size`, for training a vocabulary."""
    batch: list[str] = []
    for path in paths:
        for document in read_documents(path):
            batch.extend(document)
            if len(batch) >= batch_size:
                yield batch
                batch = []
    if batch:
        yield batch


def _raw_lines(path: Path, info: CorpusFile) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, bytes without the newline); hashes the file on the way."""
    digest = hashlib.sha256()
    rest = b""
    number = 0
    with open_input(path, "corpus file") as f:
        # Big blocks keep the per-line cost at one split, not one read call.
        for block in iter(lambda: f.read(_BLOCK), b""):
            digest.update(block)
            info.bytes += len(block)
            lines = (rest + block).split(b"\n")
            rest = lines.pop()
            for line in lines:
                number += 1
                yield number, line.rstrip(b"\r")
    if rest:
        number += 1
        yield number, rest.rstrip(b"\r")
    info.lines = number
    info.sha256 = digest.hexdigest()


def _jsonl_sentences(
    text: str, path: Path, number: int, skip: bool, info: CorpusFile
) -> list[str] | None:
    if not text.strip():
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        _bad_line(f"not valid JSON ({err.msg} at column {err.colno})", path, number, skip, info)
        return None
    except (ValueError, RecursionError) as err:  # a 5,000-digit number, [[[[...]]]] nesting
        _bad_line(f"not valid JSON ({err})", path, number, skip, info)
        return None
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        _bad_line('expected a JSON object with a string "text" key', path, number, skip, info)
        return None
    # A \ud800 escape decodes to a lone surrogate, which no tokenizer or file can take.
    if "\\u" in text and _SURROGATE.search(record["text"]):
        _bad_line('"text" holds a lone surrogate (\\ud800-\\udfff)', path, number, skip, info)
        return None
    return [s.strip() for s in record["text"].split("\n") if s.strip()]


def _bad_line(message: str, path: Path, number: int, skip: bool, info: CorpusFile) -> None:
    if not skip:
        raise DataError(message, path, number)
    info.skipped_lines += 1
