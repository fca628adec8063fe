"""The on-disk shard format: writing it (`ShardWriter`) and reading it back (`Shards`)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from pretrainkit.errors import DataError
from pretrainkit.tokenization import Tokenizer, load_tokenizer
from pretrainkit.tokenization.files import sha256_file

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TOKENS = "tokens.bin"
SENTENCES = "sentences.npy"
DOCUMENTS = "documents.npy"
# Explicit little-endian so shards move between machines unchanged.
DTYPES: dict[str, np.dtype] = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}
_INDEX_DTYPE = np.dtype("<i8")


class ShardWriter:
    """Appends tokenized chunks to tokens.bin and the two index files, in order."""

    def __init__(self, directory: Path, dtype: np.dtype):
        self.directory = directory
        self.dtype = DTYPES[np.dtype(dtype).name]
        self._tokens = open(directory / TOKENS, "wb")  # noqa: SIM115 - closed in finish()
        # Index entries go to raw files first: the .npy header needs the final length.
        self._sentences = open(directory / (SENTENCES + ".raw"), "wb")  # noqa: SIM115
        self._documents = open(directory / (DOCUMENTS + ".raw"), "wb")  # noqa: SIM115
        self._digest = hashlib.sha256()
        self.num_tokens = self.num_sentences = self.num_documents = 0

    def add(self, tokens: np.ndarray, sentence_lengths: np.ndarray, doc_sizes: np.ndarray) -> None:
        """Append one chunk: flat tokens, tokens per sentence, sentences per document."""
        data = np.ascontiguousarray(tokens, dtype=self.dtype).tobytes()
        self._tokens.write(data)
        self._digest.update(data)
        ends = np.cumsum(sentence_lengths, dtype=np.int64) + self.num_tokens
        self._sentences.write(ends.astype(_INDEX_DTYPE).tobytes())
        doc_ends = np.cumsum(doc_sizes, dtype=np.int64) + self.num_sentences
        self._documents.write(doc_ends.astype(_INDEX_DTYPE).tobytes())
        self.num_tokens += len(tokens)
        self.num_sentences += len(sentence_lengths)
        self.num_documents += len(doc_sizes)

    @property
    def content_hash(self) -> str:
        """SHA-256 of tokens.bin as written so far."""
        return self._digest.hexdigest()

    def finish(self) -> dict[str, int]:
        """Close the files, turn the raw indexes into .npy files and return the counts."""
        for f in (self._tokens, self._sentences, self._documents):
            f.close()
        for name, count in ((SENTENCES, self.num_sentences), (DOCUMENTS, self.num_documents)):
            raw = self.directory / (name + ".raw")
            if count == 0:  # a zero-length file cannot be memory-mapped
                np.save(self.directory / name, np.empty(0, dtype=_INDEX_DTYPE))
                raw.unlink()
                continue
            out = np.lib.format.open_memmap(
                self.directory / name, mode="w+", dtype=_INDEX_DTYPE, shape=(count,)
            )
            step = 1 << 20  # copy in blocks so memory stays flat for any corpus size
            for start in range(0, count, step):
                n = min(step, count - start)
                out[start : start + n] = np.fromfile(
                    raw, dtype=_INDEX_DTYPE, count=n, offset=start * _INDEX_DTYPE.itemsize
                )
            out.flush()
            del out
            raw.unlink()
        return {
            "tokens": self.num_tokens,
            "sentences": self.num_sentences,
            "documents": self.num_documents,
        }


class Shards:
    """Read access to a folder written by `preprocess`.

    Token ids are read with positioned reads of the span asked for, never loaded or mapped whole;
    the two small index files are memory-mapped.

    Attributes:
        directory: the shard folder.
        manifest: the parsed manifest.json.
        tokenizer: the tokenizer saved in `directory/tokenizer`.
        sentence_ends: memmap, end offset in tokens of each sentence.
        document_ends: memmap, end index in sentences of each document.
    """

    def __init__(self, directory: Path, manifest: dict, tokenizer: Tokenizer):
        self.directory = directory
        self.manifest = manifest
        self.tokenizer = tokenizer
        self.dtype = DTYPES[manifest["dtype"]]
        counts = manifest["counts"]
        self.num_tokens = int(counts["tokens"])
        self.num_sentences = int(counts["sentences"])
        self.num_documents = int(counts["documents"])
        self.sentence_ends = _load_index(directory / SENTENCES, self.num_sentences, self.num_tokens)
        self.document_ends = _load_index(
            directory / DOCUMENTS, self.num_documents, self.num_sentences
        )
        self._file = open(directory / TOKENS, "rb", buffering=0)  # noqa: SIM115 - owned

    @classmethod
    def open(cls, directory: str | Path, verify: bool = False) -> Shards:
        """Open and validate a shard folder.

        Args:
            directory: a folder written by `preprocess`.
            verify: also recompute the SHA-256 of tokens.bin against `content_hash` (reads it all).

        Raises:
            DataError: missing folder or files, unreadable manifest, sizes that do not match.
        """
        directory = Path(directory)
        manifest_path = directory / MANIFEST
        if not manifest_path.is_file():
            what = "data folder not found" if not directory.is_dir() else f"no {MANIFEST} in it"
            raise DataError(f"{what}; create it with preprocess", directory)
        manifest = _read_manifest(manifest_path)
        tokens_path = directory / TOKENS
        if not tokens_path.is_file():
            raise DataError("file not found", tokens_path)
        expected = int(manifest["counts"]["tokens"]) * DTYPES[manifest["dtype"]].itemsize
        if tokens_path.stat().st_size != expected:
            raise DataError(
                f"has {tokens_path.stat().st_size} bytes, the manifest says {expected}; "
                "the folder is incomplete or corrupt",
                tokens_path,
            )
        if verify and sha256_file(tokens_path) != manifest["content_hash"]:
            raise DataError("content does not match content_hash in the manifest", tokens_path)
        tokenizer = load_tokenizer(directory / "tokenizer")
        if tokenizer.vocab_size != manifest["tokenizer"]["vocab_size"]:
            raise DataError("tokenizer does not match the manifest's vocab_size", directory)
        return cls(directory, manifest, tokenizer)

    def read_tokens(self, start: int, stop: int) -> np.ndarray:
        """Token ids `[start, stop)` as int64, with one positioned read."""
        itemsize = self.dtype.itemsize
        size = (stop - start) * itemsize
        data = os.pread(self._file.fileno(), size, start * itemsize)
        if len(data) != size:
            raise DataError(f"short read at token {start}", self.directory / TOKENS)
        return np.frombuffer(data, dtype=self.dtype).astype(np.int64)

    def document_sentences(self, document: int) -> tuple[int, int]:
        """Index range `[first, end)` of the sentences of a document."""
        first = int(self.document_ends[document - 1]) if document > 0 else 0
        return first, int(self.document_ends[document])

    def sentence_start(self, sentence: int) -> int:
        """Token offset where a sentence starts."""
        return int(self.sentence_ends[sentence - 1]) if sentence > 0 else 0

    def close(self) -> None:
        """Close tokens.bin (the object is unusable afterwards)."""
        self._file.close()


def _read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"not valid JSON ({err.msg})", path, err.lineno) from None
    except UnicodeDecodeError:
        raise DataError("not UTF-8", path) from None
    required = ("format_version", "objective", "seq_length", "dtype", "counts", "tokenizer")
    if not isinstance(manifest, dict) or any(key not in manifest for key in required):
        raise DataError(f"manifest must hold the keys {', '.join(required)}", path)
    if manifest["format_version"] != FORMAT_VERSION:
        raise DataError(
            f"format_version {manifest['format_version']} is not supported "
            f"(expected {FORMAT_VERSION}); run preprocess again",
            path,
        )
    if manifest["dtype"] not in DTYPES:
        raise DataError(f"dtype {manifest['dtype']!r} is not one of {', '.join(DTYPES)}", path)
    counts = manifest["counts"]
    if not isinstance(counts, dict) or any(
        not isinstance(counts.get(k), int) for k in ("tokens", "sentences", "documents")
    ):
        raise DataError("counts must hold integer tokens, sentences and documents", path)
    return manifest


def _load_index(path: Path, count: int, last: int) -> np.ndarray:
    """Memory-map an index file and check it against the manifest counts."""
    if not path.is_file():
        raise DataError("file not found", path)
    try:
        index = np.load(path, mmap_mode="r")
    except (ValueError, OSError) as err:
        raise DataError(f"not a valid .npy file ({err})", path) from None
    if index.dtype != _INDEX_DTYPE or index.shape != (count,) or (count and index[-1] != last):
        raise DataError(
            f"holds {index.shape} {index.dtype}, expected ({count},) int64 ending at {last}; "
            "the folder is incomplete or corrupt",
            path,
        )
    return index
