"""Tokenizers built on HuggingFace `tokenizers` and `sentencepiece`: load, train, save.

`load_tokenizer` reads BERT vocab.txt, GPT-2 vocab + merges, SentencePiece .model files and
folders written by `Tokenizer.save`; `train_tokenizer` learns a new vocabulary from a corpus.
"""

from pretrainkit.tokenization.base import SPECIAL_ROLES, Tokenizer
from pretrainkit.tokenization.loading import load_tokenizer
from pretrainkit.tokenization.training import KINDS, train_tokenizer

__all__ = ["KINDS", "SPECIAL_ROLES", "Tokenizer", "load_tokenizer", "train_tokenizer"]
