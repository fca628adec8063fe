"""Training a new vocabulary (WordPiece, byte-level BPE or SentencePiece unigram) on a corpus."""

from __future__ import annotations

import io
import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import sentencepiece
from tokenizers import models, trainers
from tokenizers.pre_tokenizers import ByteLevel

from pretrainkit.errors import ConfigError, DataError, closest
from pretrainkit.fileio import atomic_directory
from pretrainkit.tokenization import hf
from pretrainkit.tokenization.base import Tokenizer
from pretrainkit.tokenization.spm import SentencePieceTokenizer

KINDS = ("wordpiece", "bpe", "unigram")
# Trained SentencePiece models carry the same special-token strings as trained byte-level BPE.
_SPM_SPECIALS = hf.ROBERTA_SPECIALS


def train_tokenizer(
    corpus_files: list[str | Path],
    kind: str,
    vocab_size: int,
    out_dir: str | Path,
    lowercase: bool = True,
    overwrite: bool = False,
) -> Tokenizer:
    """Train a vocabulary on corpus files and save the tokenizer into `out_dir`.

    Args:
        corpus_files: plain-text files (blank lines ignored) or `.jsonl` files of
            `{"text": ...}` records.
        kind: "wordpiece" (BERT specials), "bpe" (byte-level, RoBERTa specials) or "unigram"
            (SentencePiece, specials <pad> <unk> <s> </s> <mask>).
        vocab_size: the size to reach, special tokens included; a corpus too small for it yields
            a smaller vocabulary.
        out_dir: written as a whole (through a temporary folder beside it) or not at all; an
            existing non-empty folder is replaced only with ``overwrite``.
        lowercase: lower-case text before learning and applying the vocabulary.

    Returns:
        The trained tokenizer, identical to `load_tokenizer(out_dir)`.

    Raises:
        ConfigError: unknown kind or a vocabulary size too small for the specials.
        DataError: missing or malformed corpus file, or a corpus without any text.
    """
    from pretrainkit.data.corpus import iter_text_batches  # data imports tokenization

    if kind not in KINDS:
        raise ConfigError(
            f"unknown tokenizer kind {kind!r}{closest(kind, KINDS)}; valid: {', '.join(KINDS)}"
        )
    minimum = 300 if kind == "bpe" else 10  # byte-level BPE starts from 256 byte symbols
    if vocab_size < minimum:
        raise ConfigError(
            f"vocab_size {vocab_size} is too small for a {kind} vocabulary (min {minimum})"
        )
    paths = [Path(p) for p in corpus_files]
    if not paths:
        raise DataError("no corpus files given")
    batches = iter_text_batches(paths)
    first = next(batches, None)
    if first is None:
        raise DataError(
            "corpus holds no text to learn a vocabulary from", ", ".join(map(str, paths))
        )
    texts = itertools.chain([first], batches)
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        if kind == "unigram":
            tokenizer: Tokenizer = _train_unigram(texts, vocab_size, lowercase)
        else:
            tokenizer = _train_hf(texts, kind, vocab_size, lowercase)
        tokenizer.save(tmp)
    return tokenizer


def _train_hf(texts: Iterator[list[str]], kind: str, vocab_size: int, lowercase: bool) -> Tokenizer:
    trainer: trainers.Trainer
    if kind == "wordpiece":
        specials = hf.WORDPIECE_SPECIALS
        backend = hf.wordpiece_pipeline(models.WordPiece(unk_token="[UNK]"), lowercase)
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size,
            special_tokens=hf.WORDPIECE_TOKENS,
            continuing_subword_prefix="##",
            show_progress=False,
        )
    else:
        specials = hf.ROBERTA_SPECIALS
        backend = hf.byte_level_pipeline(models.BPE(), lowercase)
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            # Order fixes the ids: <s>=0 <pad>=1 </s>=2 <unk>=3 as in RoBERTa.
            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
            initial_alphabet=ByteLevel.alphabet(),
            show_progress=False,
        )
    backend.train_from_iterator(texts, trainer=trainer)
    return hf.HFTokenizer(backend, kind, lowercase, dict(specials))


def _train_unigram(texts: Iterator[list[str]], vocab_size: int, lowercase: bool) -> Tokenizer:
    model = io.BytesIO()
    failures: list[Exception] = []

    def sentences() -> Iterator[str]:
        try:
            for batch in texts:
                yield from batch
        except Exception as err:  # SentencePiece turns it into a RuntimeError; keep the original
            failures.append(err)
            raise

    try:
        _run_spm_trainer(sentences(), model, vocab_size, lowercase)
    except RuntimeError:
        if failures:
            raise failures[0] from None
        raise
    return SentencePieceTokenizer(model.getvalue(), dict(_SPM_SPECIALS), "unigram", lowercase)


def _run_spm_trainer(
    sentences: Iterator[str], model: io.BytesIO, vocab_size: int, lowercase: bool
) -> None:
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=sentences,
        model_writer=model,
        model_type="unigram",
        vocab_size=vocab_size,
        # Tiny corpora cannot always fill the vocabulary; take what they give instead of failing.
        hard_vocab_limit=False,
        # Bounds the trainer's memory on big corpora (it samples this many sentences).
        input_sentence_size=5_000_000,
        shuffle_input_sentence=True,
        character_coverage=0.9995,  # the value SentencePiece recommends for CJK text
        normalization_rule_name="nmt_nfkc_cf" if lowercase else "nmt_nfkc",
        pad_id=0,
        unk_id=1,
        bos_id=2,
        eos_id=3,
        control_symbols=["<mask>"],
        num_threads=os.cpu_count() or 1,
        minloglevel=2,
    )
