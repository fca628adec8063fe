"""Word-embedding centroids per language for Embedding-Push: the token counts of unlabelled
text per language, so that a centroid follows the word table as it trains."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pretrainkit.errors import DataError
from pretrainkit.fileio import read_utf8


def read_language_text(path: str | Path) -> dict[str, list[str]]:
    """``language<TAB>sentence`` lines (blank lines skipped) → sentences by language."""
    by_language: dict[str, list[str]] = {}
    for number, line in enumerate(read_utf8(Path(path)).split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        language, tab, text = line.partition("\t")
        if not tab or not language.strip() or not text.strip():
            raise DataError("expected language<TAB>sentence", path, line=number)
        by_language.setdefault(language.strip(), []).append(text)
    if "en" not in by_language:
        raise DataError("no English (en) sentences: Embedding-Push pushes away from English", path)
    others = sorted(set(by_language) - {"en"})
    if not others:
        raise DataError(
            "only English sentences: Embedding-Push needs unlabelled text of at least one other "
            "language to compute its centroid",
            path,
        )
    return by_language


def token_counts(
    path: str | Path, tokenizer: Any, vocab_size: int
) -> tuple[list[str], torch.Tensor]:
    """The languages (English first) and their token counts ``[languages, vocab]``, special
    tokens left out; a language whose text has no tokens is an error naming it."""
    by_language = read_language_text(path)
    languages = ["en", *sorted(set(by_language) - {"en"})]
    special = set(tokenizer.special_ids)
    counts = torch.zeros(len(languages), vocab_size)
    for row, language in enumerate(languages):
        for ids in tokenizer.encode_batch(by_language[language]):
            kept = [i for i in ids if i not in special]
            if kept:
                counts[row].index_add_(0, torch.tensor(kept), torch.ones(len(kept)))
        if counts[row].sum() == 0:
            raise DataError(f"language {language!r} has no tokens to average", path)
    return languages, counts
