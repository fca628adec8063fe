"""The `Tokenizer` interface that both backends (HF `tokenizers`, SentencePiece) implement."""

from __future__ import annotations

import abc
import json
from pathlib import Path

from pretrainkit.errors import ConfigError, DataError

# The roles every tokenizer fills; `mask` may be None (e.g. GPT-2 has no mask token).
SPECIAL_ROLES = ("pad", "unk", "cls", "sep", "mask", "bos", "eos")
CONFIG_FILE = "tokenizer_config.json"
CONFIG_VERSION = 1


class Tokenizer(abc.ABC):
    """A subword tokenizer with the special tokens a Transformer needs.

    Attributes:
        kind: "wordpiece", "bpe" or "unigram".
        lowercase: whether text is lower-cased before tokenization.
        vocab_size: one more than the largest id the tokenizer can produce.
        special_tokens: role ("pad", "unk", "cls", "sep", "mask", "bos", "eos") -> token string.
        pad_id, unk_id, cls_id, sep_id, bos_id, eos_id: ids of the special tokens.
        mask_id: id of the mask token, or None when the vocabulary has none.
    """

    backend: str  # "hf" or "sentencepiece"; names the file format written by `save`

    def __init__(
        self, kind: str, lowercase: bool, vocab_size: int, special_tokens: dict[str, str | None]
    ):
        self.kind = kind
        self.lowercase = lowercase
        self.vocab_size = vocab_size
        self.special_tokens = {role: special_tokens.get(role) for role in SPECIAL_ROLES}
        ids: dict[str, int | None] = {}
        for role, token in self.special_tokens.items():
            token_id = None if token is None else self.token_to_id(token)
            if token_id is None and (role != "mask" or token is not None):
                raise DataError(f"special token {token!r} ({role}) is not in the vocabulary")
            ids[role] = token_id
        self.pad_id: int = ids["pad"]  # type: ignore[assignment]
        self.unk_id: int = ids["unk"]  # type: ignore[assignment]
        self.cls_id: int = ids["cls"]  # type: ignore[assignment]
        self.sep_id: int = ids["sep"]  # type: ignore[assignment]
        self.bos_id: int = ids["bos"]  # type: ignore[assignment]
        self.eos_id: int = ids["eos"]  # type: ignore[assignment]
        self.mask_id: int | None = ids["mask"]

    # --- backend-specific -------------------------------------------------------------------
    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without special tokens."""

    @abc.abstractmethod
    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text (no special tokens); faster than calling `encode` per text."""

    @abc.abstractmethod
    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        """Text of `ids`; special tokens are kept unless `skip_special_tokens`."""

    @abc.abstractmethod
    def token_to_id(self, token: str) -> int | None:
        """Id of a vocabulary entry, or None when it is not in the vocabulary."""

    @abc.abstractmethod
    def id_to_token(self, token_id: int) -> str | None:
        """Vocabulary entry of an id, or None when the id is out of range."""

    @abc.abstractmethod
    def _save_model(self, directory: Path) -> None:
        """Write the backend's own model file(s) into `directory`."""

    # --- shared ---------------------------------------------------------------------------
    @property
    def special_ids(self) -> list[int]:
        """Sorted ids of all special tokens (never masked, never drawn as random tokens)."""
        ids = {self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.bos_id, self.eos_id}
        if self.mask_id is not None:
            ids.add(self.mask_id)
        return sorted(ids)

    def build_inputs(
        self, a: list[int], b: list[int] | None = None, max_length: int | None = None
    ) -> tuple[list[int], list[int]]:
        """Wrap one or two token sequences as `[CLS] a [SEP] (b [SEP])`.

        Args:
            a: ids of the first segment.
            b: ids of the optional second segment.
            max_length: when given, the longer segment is cut from its end first (as BERT does)
                until the result fits.

        Returns:
            `(input_ids, token_type_ids)`; types are 0 for `[CLS] a [SEP]`, 1 for `b [SEP]`.
        """
        num_special = 2 if b is None else 3
        if max_length is not None:
            if max_length < num_special:
                raise ConfigError(
                    f"max_length {max_length} is too small: the special tokens alone need "
                    f"{num_special}"
                )
            len_a, len_b = truncated_lengths(len(a), len(b or []), max_length - num_special)
            a = a[:len_a]
            b = None if b is None else b[:len_b]
        input_ids = [self.cls_id, *a, self.sep_id]
        token_types = [0] * len(input_ids)
        if b is not None:
            input_ids += [*b, self.sep_id]
            token_types += [1] * (len(b) + 1)
        return input_ids, token_types

    def save(self, directory: str | Path) -> None:
        """Write `tokenizer_config.json` plus the backend's model file into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._save_model(directory)
        config = {
            "format_version": CONFIG_VERSION,
            "backend": self.backend,
            "kind": self.kind,
            "lowercase": self.lowercase,
            "special_tokens": self.special_tokens,
        }
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """Same as `pretrainkit.tokenization.load_tokenizer`."""
        from pretrainkit.tokenization.loading import load_tokenizer  # loading imports this module

        return load_tokenizer(path)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(kind={self.kind!r}, vocab_size={self.vocab_size}, "
            f"lowercase={self.lowercase})"
        )


def truncated_lengths(len_a: int, len_b: int, budget: int) -> tuple[int, int]:
    """Lengths after repeatedly dropping a token from the longer side (ties: from b) to fit.

    Computed in closed form so that a single huge segment costs nothing extra.
    """
    excess = len_a + len_b - budget
    if excess <= 0:
        return len_a, len_b
    gap = abs(len_a - len_b)
    if gap >= excess:
        return (len_a - excess, len_b) if len_a > len_b else (len_a, len_b - excess)
    # Bring the longer side down to the shorter one, then both shrink in turn, b first.
    rest = excess - gap
    shorter = min(len_a, len_b)
    return shorter - rest // 2, shorter - (rest - rest // 2)
