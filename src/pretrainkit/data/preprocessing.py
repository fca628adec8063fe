"""`preprocess`: tokenize a corpus once into flat token shards that the streams read back.

Output folder:
    tokens.bin      all token ids back to back (uint16 when the vocabulary allows, else uint32)
    sentences.npy   int64 end offset (into tokens) of each sentence
    documents.npy   int64 end index (into sentences) of each document
    manifest.json   counts, dtype, corpus and tokenizer hashes, `content_hash` of tokens.bin
    tokenizer/      the tokenizer, so training can take it from the data folder
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pretrainkit.data.corpus import CorpusFile
from pretrainkit.data.objectives import Objective, get_objective
from pretrainkit.data.shards import FORMAT_VERSION, MANIFEST, ShardWriter
from pretrainkit.data.workers import Chunk, encode_chunks
from pretrainkit.errors import ConfigError, DataError
from pretrainkit.fileio import atomic_directory
from pretrainkit.tokenization import Tokenizer, load_tokenizer
from pretrainkit.tokenization.files import sha256_file

# Characters per task: big enough to amortise inter-process traffic, small enough to balance.
_CHUNK_CHARS = 64 * 1024


def check_objective(objective: str, seq_length: int, tokenizer: Tokenizer) -> None:
    """Raise ConfigError when the objective, length or tokenizer cannot work together."""
    get_objective(objective).check(seq_length, tokenizer)


def preprocess(
    corpus_files: Iterable[str | Path],
    tokenizer_path: str | Path,
    objective: str,
    seq_length: int,
    out_dir: str | Path,
    workers: int = 1,
    skip_bad_lines: bool = False,
    log: Callable[[str], object] = print,
    overwrite: bool = False,
    objective_options: dict[str, Any] | None = None,
) -> dict:
    """Tokenize corpus files into a shard folder.

    Args:
        corpus_files: plain-text files (one sentence a line, blank line between documents) or
            `.jsonl` files (one `{"text": ...}` document a line).
        tokenizer_path: anything `load_tokenizer` reads.
        objective: a registered objective name (``OBJECTIVES``); recorded as the streams' default.
        seq_length: recorded as the streams' default window length.
        out_dir: the shard folder; written through `.tmp-<name>-<pid>` beside it and renamed
            at the end; an existing non-empty folder is replaced only with ``overwrite``.
        workers: processes that tokenize, this one included (for an image objective: helper
            processes that decode the images while this one writes); the output does not
            depend on it.
        skip_bad_lines: skip lines that are not UTF-8 / valid JSONL records (rows whose image
            cannot be read, for an image objective), counted in the log and the manifest,
            instead of failing.
        log: receives one progress line per file and a summary.
        objective_options: the objective's options (``Objective.options_class`` fields) to
            record in the manifest as the streams' defaults; unset ones take their defaults.

    Returns:
        The manifest (also written as manifest.json).

    Raises:
        DataError: missing file, bad line (file and line named), or no tokens at all.
        ConfigError: unknown objective, too short seq_length, mask-less tokenizer for masking.
    """
    paths = [Path(p) for p in corpus_files]
    if not paths:
        raise DataError("no corpus files given")
    for path in paths:
        if not path.is_file():
            raise DataError("corpus file not found", path)
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    spec = get_objective(objective).configured(objective_options)
    # The objective may add tokens (sentinels, a mask token), saved with the shards below.
    tokenizer = spec.prepare_tokenizer(load_tokenizer(tokenizer_path), seq_length)
    spec.check(seq_length, tokenizer)
    dtype = np.dtype(np.uint16 if tokenizer.vocab_size <= 65535 else np.uint32)
    infos = [CorpusFile(path) for path in paths]
    start = time.perf_counter()
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        tokenizer.save(tmp / "tokenizer")
        writer = ShardWriter(tmp, dtype)
        # An objective whose corpus is not text (images: masked_patch) encodes it itself.
        encoded_chunks = spec.encode_corpus(paths, infos, dtype, log, workers, skip_bad_lines)
        if encoded_chunks is None:
            chunks = _chunks(spec, paths, infos, skip_bad_lines, log)
            encoded_chunks = encode_chunks(chunks, tokenizer, tmp / "tokenizer", dtype, workers)
        for encoded in encoded_chunks:
            writer.add(*encoded)
        counts = writer.finish()
        if counts["tokens"] == 0:
            raise DataError("corpus holds no tokens", ", ".join(map(str, paths)))
        counts["skipped_lines"] = sum(info.skipped_lines for info in infos)
        tokenizer_dir = tmp / "tokenizer"
        manifest = {
            "format_version": FORMAT_VERSION,
            "objective": objective,
            "objective_options": spec.options_dict(),
            "seq_length": seq_length,
            "dtype": dtype.name,
            "counts": counts,
            "corpora": [
                {"path": str(i.path.resolve()), "bytes": i.bytes, "sha256": i.sha256} for i in infos
            ],
            "tokenizer": {
                "kind": tokenizer.kind,
                "vocab_size": tokenizer.vocab_size,
                "files": {
                    f.name: sha256_file(f) for f in sorted(tokenizer_dir.iterdir()) if f.is_file()
                },
            },
            "content_hash": writer.content_hash,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    seconds = time.perf_counter() - start
    megabytes = sum(i.bytes for i in infos) / 1e6
    log(
        f"preprocess: {megabytes:.1f} MB -> {counts['tokens']:,} tokens, {counts['sentences']:,} "
        f"sentences, {counts['documents']:,} documents in {seconds:.1f} s "
        f"({megabytes / max(seconds, 1e-9):.1f} MB/s); skipped lines: {counts['skipped_lines']}"
    )
    return manifest


def _chunks(
    objective: Objective,
    paths: list[Path],
    infos: list[CorpusFile],
    skip: bool,
    log: Callable[[str], object],
) -> Iterator[Chunk]:
    chunk: Chunk = []
    size = 0
    for path, info in zip(paths, infos):
        for document in objective.read_documents(path, skip, info):
            chunk.append(document)
            size += sum(len(s) for s in document)
            if size >= _CHUNK_CHARS:
                yield chunk
                chunk, size = [], 0
        skipped = f", skipped {info.skipped_lines} bad lines" if info.skipped_lines else ""
        log(f"read {path} ({info.bytes / 1e6:.1f} MB, {info.lines:,} lines{skipped})")
    if chunk:
        yield chunk
