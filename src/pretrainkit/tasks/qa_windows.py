"""Tokens of the ``qa`` task: a context's tokens aligned with its characters (the Tokenizer
gives no character offsets, so the context is tokenized piece by piece), and the overlapping
windows a long context is cut into, question first.
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pretrainkit.errors import ConfigError
from pretrainkit.tasks.qa_format import QAData
from pretrainkit.tokenization import Tokenizer

if TYPE_CHECKING:
    from pretrainkit.tasks.qa import QAOptions  # qa imports this module


# -- characters to tokens -----------------------------------------------------------------------

# CJK ideographs, as BERT's tokenizer splits them (one token each).
CJK = (
    "\u4e00-\u9fff\u3400-\u4dbf\uf900-\ufaff"
    "\U00020000-\U0002a6df\U0002a700-\U0002ceaf\U0002f800-\U0002fa1f"
)
CJK_CHAR = re.compile(f"[{CJK}]")


@functools.cache
def _piece_pattern() -> re.Pattern[str]:
    """Whitespace, then one CJK character, one punctuation mark (BERT's: ASCII symbols and
    Unicode category P) or a run of anything else: the units BERT's pre-tokenizer splits."""
    punctuation = {
        chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c))[0] == "P"
    }
    punctuation.update(
        chr(c) for c in (*range(33, 48), *range(58, 65), *range(91, 97), *range(123, 127))
    )
    marks = "".join(re.escape(c) for c in sorted(punctuation))
    return re.compile(rf"\s*([{CJK}{marks}]|[^\s{CJK}{marks}]+)")


# Token prefixes that mark a piece's position, not characters: WordPiece continuation,
# SentencePiece and byte-level BPE word starts.
_MARKERS = ("##", "\u2581", "\u0120")


@dataclass
class TokenAlignment:
    """A context's tokens and the characters each came from.

    Attributes:
        ids: ``[n]`` token ids, without special tokens.
        starts: ``[n]`` the first character of each token.
        ends: ``[n]`` one past each token's last character. Tokens of a piece whose parts the
            tokenizer does not reveal (a byte-level piece with non-ASCII characters, an unknown
            sub-token) all span the whole piece.
    """

    ids: np.ndarray
    starts: np.ndarray
    ends: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def token_span(self, start: int, end: int) -> tuple[int, int] | None:
        """The first and last token that cover characters ``[start, end)``; None when no token
        does (characters the tokenizer drops)."""
        first = int(np.searchsorted(self.ends, start, side="right"))
        last = int(np.searchsorted(self.starts, end, side="left")) - 1
        return (first, last) if first <= last else None


def align_tokens(tokenizer: Tokenizer, texts: Sequence[str]) -> list[TokenAlignment]:
    """Tokenize every text piece by piece, each piece with the whitespace before it (so that
    byte-level and SentencePiece vocabularies see their word-start marker); with a WordPiece
    vocabulary the tokens are exactly those of the whole text."""
    pattern = _piece_pattern()
    spans = [[(m.start(), m.start(1), m.end(1)) for m in pattern.finditer(t)] for t in texts]
    # Pieces repeat (CJK characters, common words): each distinct one is tokenized once.
    pieces = [text[a:c] for text, found in zip(texts, spans) for a, _, c in found]
    distinct = list(dict.fromkeys(pieces))
    lookup = dict(zip(distinct, tokenizer.encode_batch(distinct) if distinct else []))
    encoded = (lookup[piece] for piece in pieces)
    alignments = []
    for found in spans:
        ids: list[int] = []
        starts: list[int] = []
        ends: list[int] = []
        for _, begin, end in found:
            piece_ids = next(encoded)
            ids += piece_ids
            bounds = _inside_piece(tokenizer, piece_ids, begin, end)
            starts += [s for s, _ in bounds]
            ends += [e for _, e in bounds]
        alignments.append(
            TokenAlignment(
                np.asarray(ids, dtype=np.int64),
                np.asarray(starts, dtype=np.int64),
                np.asarray(ends, dtype=np.int64),
            )
        )
    return alignments


def _inside_piece(
    tokenizer: Tokenizer, ids: list[int], begin: int, end: int
) -> list[tuple[int, int]]:
    if len(ids) <= 1:
        return [(begin, end)] * len(ids)
    lengths = []
    for token_id in ids:
        token = tokenizer.id_to_token(token_id) or ""
        for marker in _MARKERS:
            if token.startswith(marker):
                token = token[len(marker) :]
                break
        lengths.append(len(token))
    if tokenizer.unk_id in ids or sum(lengths) != end - begin:
        return [(begin, end)] * len(ids)  # the parts are not the piece's characters
    bounds = []
    for length in lengths:
        bounds.append((begin, begin + length))
        begin += length
    return bounds


# -- windows ----------------------------------------------------------------------------------


def window_spans(length: int, room: int, stride: int) -> list[tuple[int, int]]:
    """``(first token, number of tokens)`` of the windows over a context of ``length`` tokens:
    ``room`` tokens each, starting ``stride`` apart (less when a window is shorter), the last
    one reaching the end; one empty window for an empty context."""
    spans = []
    start = 0
    while True:
        size = min(room, length - start)
        spans.append((start, size))
        if start + size >= length:
            return spans
        start += min(size, stride)


@dataclass
class Prepared:
    """The tokens of a QA file: per question its context's alignment, its (cut) question ids
    and its windows."""

    contexts: list[TokenAlignment]
    questions: list[list[int]]
    windows: list[list[tuple[int, int]]]

    def inputs(
        self, tokenizer: Tokenizer, row: int, start: int, size: int
    ) -> tuple[list[int], list[int], int]:
        """``input_ids``, ``token_type_ids`` of one window and where its context starts."""
        question = self.questions[row]
        window = self.contexts[row].ids[start : start + size].tolist()
        input_ids, token_types = tokenizer.build_inputs(question, window)
        return input_ids, token_types, context_offset(tokenizer, len(question))


def context_offset(tokenizer: Tokenizer, question_length: int) -> int:
    """The position of the context's first token: where the template puts its second segment."""
    position = 0
    for item, _ in tokenizer.template.pair:
        if item == "$B":
            break
        position += question_length if item == "$A" else 1
    return position


def prepare(data: QAData, tokenizer: Tokenizer, options: QAOptions) -> Prepared:
    room = options.seq_length - tokenizer.template.num_special(True)
    if room < 2:
        raise ConfigError(
            f"seq_length {options.seq_length} leaves no room for a question and a context"
        )
    unique: dict[str, int] = {}
    for context in data.contexts:
        unique.setdefault(context, len(unique))
    aligned = align_tokens(tokenizer, list(unique))
    keep = min(options.max_query_length, room // 2)
    questions = [ids[:keep] for ids in tokenizer.encode_batch(data.questions)]
    contexts = [aligned[unique[c]] for c in data.contexts]
    windows = [
        window_spans(len(c), room - len(q), options.doc_stride) for c, q in zip(contexts, questions)
    ]
    return Prepared(contexts, questions, windows)
