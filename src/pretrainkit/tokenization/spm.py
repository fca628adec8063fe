"""SentencePiece tokenizers (unigram or BPE models) through the `sentencepiece` library."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sentencepiece

from pretrainkit.errors import DataError
from pretrainkit.tokenization.base import Tokenizer
from pretrainkit.tokenization.templates import Template

MODEL_FILE = "spm.model"
# TrainerSpec.model_type values in sentencepiece_model.proto.
_MODEL_TYPES = {1: "unigram", 2: "bpe", 3: "word", 4: "char"}


@dataclass(frozen=True)
class IdLayout:
    """How a model's ids relate to the SentencePiece model's own ids.

    HF and fairseq shift them and add tokens the .model file does not hold: XLM-R puts
    ``<s> <pad> </s> <unk>`` at 0-3 and every other piece at its id + 1, ``<mask>`` last; T5
    appends ``<extra_id_N>``; PEGASUS puts ``<pad> </s> <mask_1> <mask_2> <unk_2>...`` first and
    shifts the pieces by 103. Text is split on these tokens before SentencePiece sees it, as HF
    does.

    Attributes:
        offset: added to every piece's id.
        added: (token, id) of tokens outside the model, or moved (a piece whose string is
            listed takes the listed id).
    """

    offset: int = 0
    added: tuple[tuple[str, int], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"offset": self.offset, "added": dict(self.added)}

    @classmethod
    def from_json(cls, data: Any, where: object) -> IdLayout:
        try:
            return cls(
                int(data["offset"]), tuple((str(t), int(i)) for t, i in data["added"].items())
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise DataError(
                f"layout must be {{'offset': n, 'added': {{token: id}}}}: {err}", where
            ) from None


class SentencePieceTokenizer(Tokenizer):
    """A `Tokenizer` backed by a serialized SentencePiece model (saved as spm.model)."""

    backend = "sentencepiece"
    num_threads = -1  # threads of encode_batch; -1 lets SentencePiece use every core

    def __init__(
        self,
        model_proto: bytes,
        special_tokens: dict[str, str | None] | None = None,
        kind: str | None = None,
        lowercase: bool | None = None,
        template: Template | None = None,
        layout: IdLayout | None = None,
    ):
        self._proto = model_proto
        self._sp = sentencepiece.SentencePieceProcessor(model_proto=model_proto)
        self._set_layout(layout, special_tokens)
        if kind is None or lowercase is None:
            model_type, normalizer = read_model_info(model_proto)
            kind = kind or model_type
            # The "_cf" rules case-fold; recorded for information, the model applies it itself.
            lowercase = normalizer.endswith("_cf") if lowercase is None else lowercase
        if special_tokens is None:
            special_tokens = self._detect_specials()
        super().__init__(kind, lowercase, self._vocab_size, special_tokens, template)

    def _set_layout(
        self, layout: IdLayout | None, special_tokens: dict[str, str | None] | None
    ) -> None:
        self.layout = layout
        size = self._sp.get_piece_size()
        added = dict(layout.added if layout else ())
        offset = layout.offset if layout else 0
        pieces = [self._sp.id_to_piece(i) for i in range(size)]
        self._to_ours = [added.get(p, i + offset) for i, p in enumerate(pieces)]
        self._to_spm = {ours: i for i, ours in enumerate(self._to_ours)}
        self._added = {t: i for t, i in added.items() if self._to_spm.get(i) is None}
        self._added_ids = {i: t for t, i in self._added.items()}
        self._identity = layout is None or (offset == 0 and not added)
        self._vocab_size = max([*self._to_ours, *self._added.values()]) + 1
        # Imported tokenizers keep special tokens written in the text whole, as HF does.
        split = set(self._added) | {t for t in (special_tokens or {}).values() if t}
        self._split = (
            re.compile("(" + "|".join(map(re.escape, sorted(split, key=len, reverse=True))) + ")")
            if layout is not None and split
            else None
        )

    def _detect_specials(self) -> dict[str, str | None]:
        sp = self._sp

        def piece(preferred: int, *names: str, fallback: int | None = None) -> str | None:
            if preferred >= 0:
                return sp.id_to_piece(preferred)
            for name in names:
                if self.token_to_id(name) is not None:
                    return name
            return None if fallback is None or fallback < 0 else sp.id_to_piece(fallback)

        unk = sp.id_to_piece(sp.unk_id())
        bos = piece(sp.bos_id(), "<s>", "[CLS]", "<cls>") or unk
        eos = piece(sp.eos_id(), "</s>", "[SEP]", "<sep>") or unk
        return {
            "unk": unk,
            "bos": bos,
            "eos": eos,
            # Without a pad piece any id works: padded positions are masked out by attention.
            "pad": piece(sp.pad_id(), "<pad>", "[PAD]") or eos,
            "cls": piece(-1, "<cls>", "[CLS]") or bos,
            "sep": piece(-1, "<sep>", "[SEP]") or eos,
            "mask": piece(-1, "<mask>", "[MASK]"),
        }

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        if self._split is None or not any(self._split.search(t) for t in texts):
            out = self._sp.encode(texts, out_type=int, num_threads=self.num_threads)
            return out if self._identity else [[self._to_ours[i] for i in ids] for ids in out]
        return [self._encode_split(text) for text in texts]

    def _encode_split(self, text: str) -> list[int]:
        assert self._split is not None
        ids: list[int] = []
        for part in self._split.split(text):
            token_id = self.token_to_id(part) if self._split.fullmatch(part) else None
            if token_id is not None:
                ids.append(token_id)
            elif part.strip():
                ids += [self._to_ours[i] for i in self._sp.encode(part, out_type=int)]
        return ids

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        ids = [int(i) for i in ids]
        if skip_special_tokens:
            special = set(self.special_ids) | set(self._added_ids)
            ids = [i for i in ids if i not in special]
        if self._identity:
            return self._sp.decode(ids)
        parts: list[str] = []
        run: list[int] = []
        for i in [*ids, -1]:
            if i in self._to_spm:
                run.append(self._to_spm[i])
                continue
            if run:
                parts.append(self._sp.decode(run))
                run = []
            if i in self._added_ids:
                parts.append(self._added_ids[i])
        return " ".join(p for p in parts if p)

    def token_to_id(self, token: str) -> int | None:
        if token in self._added:
            return self._added[token]
        # piece_to_id answers unk_id for unknown pieces; only a round trip proves membership.
        token_id = self._sp.piece_to_id(token)
        return self._to_ours[token_id] if self._sp.id_to_piece(token_id) == token else None

    def id_to_token(self, token_id: int) -> str | None:
        if token_id in self._added_ids:
            return self._added_ids[token_id]
        spm_id = self._to_spm.get(token_id)
        return None if spm_id is None else self._sp.id_to_piece(spm_id)

    @property
    def model_proto(self) -> bytes:
        """The serialized SentencePiece model, as read."""
        return self._proto

    @property
    def piece_count(self) -> int:
        """Pieces in the SentencePiece model (ids before the layout shifts or adds any)."""
        return self._sp.get_piece_size()

    def _save_model(self, directory: Path) -> None:
        (directory / MODEL_FILE).write_bytes(self._proto)

    def _config_extras(self) -> dict[str, Any]:
        return {} if self.layout is None else {"layout": self.layout.to_json()}

    def with_added_tokens(
        self, tokens: list[str], roles: dict[str, str] | None = None
    ) -> SentencePieceTokenizer:
        # New tokens live in the id layout (saved in tokenizer_config.json), not the model.
        layout = self.layout or IdLayout()
        added = dict(layout.added)
        next_id = self.vocab_size
        for token in dict.fromkeys(tokens):
            if self.token_to_id(token) is None:
                added[token] = next_id
                next_id += 1
        return SentencePieceTokenizer(
            self._proto,
            {**self.special_tokens, **(roles or {})},
            self.kind,
            self.lowercase,
            self.template,
            IdLayout(layout.offset, tuple(added.items())),
        )

    def __getstate__(self) -> dict:
        # The C++ processor does not pickle; it is rebuilt from the serialized model.
        state = self.__dict__.copy()
        del state["_sp"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._sp = sentencepiece.SentencePieceProcessor(model_proto=self._proto)


def piece_count(model_proto: bytes) -> int:
    """Pieces in a serialized SentencePiece model (RuntimeError when it is not one)."""
    return sentencepiece.SentencePieceProcessor(model_proto=model_proto).get_piece_size()


def sentencepiece_from_file(path: Path) -> SentencePieceTokenizer:
    """Load a `.model` file written by the SentencePiece trainer."""
    try:
        proto = path.read_bytes()
    except FileNotFoundError:
        raise DataError("file not found", path) from None
    try:
        return SentencePieceTokenizer(proto)
    except (RuntimeError, ValueError, IndexError) as err:
        if isinstance(err, DataError):
            raise DataError(str(err), path) from None
        raise DataError(f"not a SentencePiece model: {err}", path) from None


def read_model_info(proto: bytes) -> tuple[str, str]:
    """(model type, normalizer rule name) read from the ModelProto wire format.

    Reading the two fields directly avoids depending on `protobuf` for the generated classes.
    """
    model_type, normalizer = "unigram", ""
    for field, value in _fields(proto):
        if field == 2 and isinstance(value, bytes):  # trainer_spec
            for sub, sub_value in _fields(value):
                if sub == 3 and isinstance(sub_value, int):  # model_type
                    model_type = _MODEL_TYPES.get(sub_value, "unigram")
        elif field == 3 and isinstance(value, bytes):  # normalizer_spec
            for sub, sub_value in _fields(value):
                if sub == 1 and isinstance(sub_value, bytes):  # name
                    normalizer = sub_value.decode("utf-8", "replace")
    return model_type, normalizer


def _fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) pairs of one protobuf message; varints as int, the rest as bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield field, value
            continue
        if wire == 2:
            size, pos = _varint(buf, pos)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield field, buf[pos : pos + size]
        pos += size


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
