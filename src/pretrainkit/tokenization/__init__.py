"""Tokenizers built on HuggingFace `tokenizers` and `sentencepiece`: load, train, save.

`load_tokenizer` reads BERT vocab.txt, GPT-2 vocab + merges, SentencePiece .model files and
folders written by `Tokenizer.save`; `train_tokenizer` learns a new vocabulary from a corpus.

Names are imported on first use (``pretrainkit.lazy``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pretrainkit.lazy import lazy_exports

_EXPORTS = {
    "SPECIAL_ROLES": "pretrainkit.tokenization.base",
    "Tokenizer": "pretrainkit.tokenization.base",
    "load_tokenizer": "pretrainkit.tokenization.loading",
    "KINDS": "pretrainkit.tokenization.training",
    "train_tokenizer": "pretrainkit.tokenization.training",
}

if TYPE_CHECKING:
    from pretrainkit.tokenization.base import SPECIAL_ROLES, Tokenizer
    from pretrainkit.tokenization.loading import load_tokenizer
    from pretrainkit.tokenization.training import KINDS, train_tokenizer

__all__ = [
    "KINDS",
    "SPECIAL_ROLES",
    "Tokenizer",
    "load_tokenizer",
    "train_tokenizer",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
