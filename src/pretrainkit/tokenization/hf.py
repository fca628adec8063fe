"""WordPiece and byte-level BPE tokenizers on top of HuggingFace `tokenizers`."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken, decoders, models, normalizers, pre_tokenizers
from tokenizers import Tokenizer as HFBackend

from pretrainkit.errors import DataError
from pretrainkit.tokenization.base import Tokenizer
from pretrainkit.tokenization.templates import Template, around, roberta_template

MODEL_FILE = "tokenizer.json"
WORDPIECE_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # ids 0-4 when trained
WORDPIECE_SPECIALS: dict[str, str | None] = {
    "pad": "[PAD]",
    "unk": "[UNK]",
    "cls": "[CLS]",
    "sep": "[SEP]",
    "mask": "[MASK]",
    "bos": "[CLS]",
    "eos": "[SEP]",
}
ROBERTA_SPECIALS: dict[str, str | None] = {
    "pad": "<pad>",
    "unk": "<unk>",
    "cls": "<s>",
    "sep": "</s>",
    "mask": "<mask>",
    "bos": "<s>",
    "eos": "</s>",
}
GPT2_EOT = "<|endoftext|>"


class HFTokenizer(Tokenizer):
    """A `Tokenizer` backed by a HuggingFace `tokenizers.Tokenizer` (saved as tokenizer.json)."""

    backend = "hf"

    def __init__(
        self,
        backend: HFBackend,
        kind: str,
        lowercase: bool,
        special_tokens: dict[str, str | None],
        template: Template | None = None,
    ):
        self._tok = backend
        # Registering them as special keeps them whole in text and lets decode skip them.
        specials = sorted({t for t in special_tokens.values() if t is not None})
        # Marking must not add: a new id would lie outside the model's embedding table.
        for role, token in special_tokens.items():
            if token is not None and backend.token_to_id(token) is None:
                raise DataError(f"special token {token!r} ({role}) is not in the vocabulary")
        backend.add_special_tokens(
            [AddedToken(t, special=True, normalized=False) for t in specials]
        )
        # Vocabularies read from files may have holes (duplicate lines); size by the largest id.
        vocab_size = max(backend.get_vocab(with_added_tokens=True).values()) + 1
        super().__init__(kind, lowercase, vocab_size, special_tokens, template)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        # The "fast" variant skips offset tracking, which preprocessing never needs.
        return [e.ids for e in self._tok.encode_batch_fast(texts, add_special_tokens=False)]

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self._tok.id_to_token(token_id)

    def _save_model(self, directory: Path) -> None:
        self._tok.save(str(directory / MODEL_FILE))

    def with_added_tokens(
        self, tokens: list[str], roles: dict[str, str] | None = None
    ) -> HFTokenizer:
        backend = HFBackend.from_str(self._tok.to_str())  # a copy: this one stays as it was
        new = [t for t in dict.fromkeys(tokens) if backend.token_to_id(t) is None]
        backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in new])
        specials = {**self.special_tokens, **(roles or {})}
        return HFTokenizer(backend, self.kind, self.lowercase, specials, self.template)


def wordpiece_pipeline(model: models.Model, lowercase: bool) -> HFBackend:
    """A BERT-style pipeline (clean text, split CJK, optional lower-casing) around `model`."""
    tok = HFBackend(model)
    # strip_accents=None follows lowercase, as BERT's uncased vocabularies expect.
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def byte_level_pipeline(model: models.Model, lowercase: bool) -> HFBackend:
    """A GPT-2 / RoBERTa-style byte-level pipeline around `model`."""
    tok = HFBackend(model)
    if lowercase:
        tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def read_vocab_lines(path: Path) -> dict[str, int]:
    """Token -> id from a one-token-per-line file (id = line index, first duplicate wins)."""
    text = _read_text(path)
    # Split on "\n" only: vocabularies contain entries such as U+2028 that splitlines() breaks.
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    vocab: dict[str, int] = {}
    for index, line in enumerate(lines):
        vocab.setdefault(line.rstrip("\r"), index)
    if not vocab:
        raise DataError("vocabulary file is empty", path)
    return vocab


def looks_lowercase(vocab: dict[str, int]) -> bool:
    """True when (almost) no ordinary entry has an upper-case letter.

    A few stray symbols (the uncased English vocabulary holds 'ℝ') must not flip the answer,
    while a cased vocabulary has thousands of such entries.
    """
    upper = sum(
        1
        for token in vocab
        if not (token[:1] in "[<" and token[-1:] in "]>") and any(c.isupper() for c in token)
    )
    return upper <= max(10, len(vocab) // 1000)


def wordpiece_from_vocab(path: Path, lowercase: bool | None = None) -> HFTokenizer:
    """Build a BERT WordPiece tokenizer from a `vocab.txt` file."""
    vocab = read_vocab_lines(path)
    missing = [t for t in WORDPIECE_TOKENS if t not in vocab]
    if missing:
        raise DataError(
            f"WordPiece vocabulary lacks the special tokens {', '.join(missing)} "
            "(expected [PAD] [UNK] [CLS] [SEP] [MASK])",
            path,
        )
    if lowercase is None:
        lowercase = looks_lowercase(vocab)
    model = models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=100)
    return HFTokenizer(
        wordpiece_pipeline(model, lowercase), "wordpiece", lowercase, WORDPIECE_SPECIALS
    )


def bpe_from_files(vocab_path: Path, merges_path: Path) -> HFTokenizer:
    """Build a byte-level BPE tokenizer from GPT-2 style vocabulary and merges files.

    The vocabulary is either `vocab.json` (token -> id) or one token per line. Files that carry
    RoBERTa's specials (<s> <pad> </s> <unk> <mask>) use them and RoBERTa's template; plain
    GPT-2 files only have <|endoftext|> (unk, bos and eos, lent to the other roles, no mask
    token) and add no special tokens around a text.
    """
    if vocab_path.suffix == ".json":
        try:
            vocab = json.loads(_read_text(vocab_path))
        except json.JSONDecodeError as err:
            raise DataError(f"not valid JSON: {err.msg}", vocab_path, err.lineno) from None
        if not isinstance(vocab, dict):
            raise DataError("expected a JSON object mapping tokens to ids", vocab_path)
    else:
        vocab = read_vocab_lines(vocab_path)
    merges = []
    for number, line in enumerate(_read_text(merges_path).split("\n"), start=1):
        line = line.rstrip("\r")
        if not line or (number == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise DataError(
                f"expected two tokens separated by a space, got {line!r}", merges_path, number
            )
        merges.append((parts[0], parts[1]))
    if all(t in vocab for t in ROBERTA_SPECIALS.values()):
        specials: dict[str, str | None] = dict(ROBERTA_SPECIALS)
        template = roberta_template("<s>", "</s>")
    elif GPT2_EOT in vocab:
        # As HF's GPT-2 tokenizer: <|endoftext|> is unk, bos and eos; pad, cls and sep borrow it.
        specials = {"unk": GPT2_EOT, "bos": GPT2_EOT, "eos": GPT2_EOT}
        template = around([], [])
    else:
        raise DataError(
            f"BPE vocabulary has neither RoBERTa's special tokens nor {GPT2_EOT}", vocab_path
        )
    try:
        model = models.BPE(vocab=vocab, merges=merges)
    except Exception as err:  # the Rust side reports merges whose parts are not in the vocabulary
        raise DataError(f"vocabulary and merges do not fit together: {err}", merges_path) from None
    backend = byte_level_pipeline(model, lowercase=False)
    return HFTokenizer(backend, "bpe", False, specials, template)


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise DataError("file not found", path) from None
    except UnicodeDecodeError as err:
        raise DataError(f"not UTF-8 (byte offset {err.start})", path) from None
