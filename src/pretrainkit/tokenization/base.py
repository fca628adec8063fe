"""The `Tokenizer` interface that both backends (HF `tokenizers`, SentencePiece) implement."""

from __future__ import annotations

import abc
import json
from pathlib import Path
from typing import Any

from pretrainkit.errors import ConfigError, DataError
from pretrainkit.tokenization.templates import Template, bert_template

# The roles of special tokens. A family may lack some (GPT-2 has only <|endoftext|>, T5 no <s>);
# such a role borrows the id of the first declared role in its fallbacks, as ids must exist for
# padding and packing. Only `mask` may stay without an id.
SPECIAL_ROLES = ("pad", "unk", "cls", "sep", "mask", "bos", "eos")
ROLE_FALLBACKS = {
    "pad": ("eos", "unk"),
    "unk": ("eos",),
    "cls": ("bos", "eos"),
    "sep": ("eos",),
    "bos": ("cls", "eos"),
    "eos": ("sep",),
}
CONFIG_FILE = "tokenizer_config.json"
CONFIG_VERSION = 1


class Tokenizer(abc.ABC):
    """A subword tokenizer with the special tokens a Transformer needs.

    Attributes:
        kind: "wordpiece", "bpe" or "unigram".
        lowercase: whether text is lower-cased before tokenization.
        vocab_size: one more than the largest id the tokenizer can produce.
        special_tokens: role ("pad", "unk", "cls", "sep", "mask", "bos", "eos") -> the token
            string the vocabulary declares for it, or None (the role then borrows an id, see
            `ROLE_FALLBACKS`).
        pad_id, unk_id, cls_id, sep_id, bos_id, eos_id: ids of the special tokens.
        mask_id: id of the mask token, or None when the vocabulary has none.
        template: where `build_inputs` puts special tokens; BERT's `[CLS] a [SEP] b [SEP]` with
            the cls and sep tokens unless the vocabulary's family says otherwise.
    """

    backend: str  # "hf" or "sentencepiece"; names the file format written by `save`

    def __init__(
        self,
        kind: str,
        lowercase: bool,
        vocab_size: int,
        special_tokens: dict[str, str | None],
        template: Template | None = None,
    ):
        self.kind = kind
        self.lowercase = lowercase
        self.vocab_size = vocab_size
        self.special_tokens = {role: special_tokens.get(role) for role in SPECIAL_ROLES}
        for role, token in self.special_tokens.items():
            if token is not None and self.token_to_id(token) is None:
                raise DataError(f"special token {token!r} ({role}) is not in the vocabulary")
        resolved = {role: self._resolve(role) for role in ROLE_FALLBACKS}
        ids = {role: self.token_to_id(token) for role, token in resolved.items()}
        self.pad_id: int = ids["pad"]  # type: ignore[assignment]
        self.unk_id: int = ids["unk"]  # type: ignore[assignment]
        self.cls_id: int = ids["cls"]  # type: ignore[assignment]
        self.sep_id: int = ids["sep"]  # type: ignore[assignment]
        self.bos_id: int = ids["bos"]  # type: ignore[assignment]
        self.eos_id: int = ids["eos"]  # type: ignore[assignment]
        mask = self.special_tokens["mask"]
        self.mask_id: int | None = None if mask is None else self.token_to_id(mask)
        self.template = template or bert_template(resolved["cls"], resolved["sep"])
        found = {t: self.token_to_id(t) for t in self.template.specials()}
        missing = [t for t, i in found.items() if i is None]
        if missing:
            raise DataError(f"template tokens {missing} are not in the vocabulary")
        self._template_ids: dict[str, int] = {t: i for t, i in found.items() if i is not None}

    def template_token_id(self, token: str) -> int:
        """Id of one of the template's special tokens (checked to exist on construction)."""
        return self._template_ids[token]

    def _resolve(self, role: str) -> str:
        for candidate in (role, *ROLE_FALLBACKS[role]):
            token = self.special_tokens[candidate]
            if token is not None:
                return token
        raise DataError(
            f"no {role} token: the vocabulary declares none for {role} or "
            f"{' / '.join(ROLE_FALLBACKS[role])}"
        )

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

    def with_added_tokens(
        self, tokens: list[str], roles: dict[str, str] | None = None
    ) -> Tokenizer:
        """A copy with ``tokens`` added as special tokens (new ids after the last; one already
        in the vocabulary keeps its id), kept whole in text and written by ``save``.

        Args:
            tokens: the tokens, in the order their new ids are given.
            roles: special roles the copy gives to tokens, e.g. ``{"mask": "<mask>"}``.
        """
        raise ConfigError(f"adding tokens to a {self.backend} tokenizer is not supported")

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
        """Wrap one or two token sequences in the tokenizer's template.

        BERT's is `[CLS] a [SEP] (b [SEP])`, RoBERTa's `<s> a </s> (</s> b </s>)`, LLaMA's
        `<s> a`, T5's `a </s> (b </s>)`, GPT-2's none (see `tokenization.templates`).

        Args:
            a: ids of the first segment.
            b: ids of the optional second segment.
            max_length: when given, the longer segment is cut from its end first (as BERT does)
                until the result fits.

        Returns:
            `(input_ids, token_type_ids)`; the types are the template's (BERT: 0 for
            `[CLS] a [SEP]`, 1 for `b [SEP]`).
        """
        num_special = self.template.num_special(b is not None)
        if max_length is not None:
            if max_length < num_special:
                raise ConfigError(
                    f"max_length {max_length} is too small: the special tokens alone need "
                    f"{num_special}"
                )
            len_a, len_b = truncated_lengths(len(a), len(b or []), max_length - num_special)
            a = a[:len_a]
            b = None if b is None else b[:len_b]
        return self.template.apply(a, b, self.template_token_id)

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
            "template": self.template.to_json(),
            **self._config_extras(),
        }
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    def _config_extras(self) -> dict[str, Any]:
        """Backend settings saved in tokenizer_config.json beside the common ones."""
        return {}

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
