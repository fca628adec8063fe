"""SentencePiece tokenizers (unigram or BPE models) through the `sentencepiece` library."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import sentencepiece

from pretrainkit.errors import DataError
from pretrainkit.tokenization.base import Tokenizer

MODEL_FILE = "spm.model"
# TrainerSpec.model_type values in sentencepiece_model.proto.
_MODEL_TYPES = {1: "unigram", 2: "bpe", 3: "word", 4: "char"}


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
    ):
        self._proto = model_proto
        self._sp = sentencepiece.SentencePieceProcessor(model_proto=model_proto)
        if kind is None or lowercase is None:
            model_type, normalizer = read_model_info(model_proto)
            kind = kind or model_type
            # The "_cf" rules case-fold; recorded for information, the model applies it itself.
            lowercase = normalizer.endswith("_cf") if lowercase is None else lowercase
        if special_tokens is None:
            special_tokens = self._detect_specials()
        super().__init__(kind, lowercase, self._sp.get_piece_size(), special_tokens)

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
        return self._sp.encode(text, out_type=int)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self._sp.encode(texts, out_type=int, num_threads=self.num_threads)

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        ids = [int(i) for i in ids]
        if skip_special_tokens:
            special = set(self.special_ids)
            ids = [i for i in ids if i not in special]
        return self._sp.decode(ids)

    def token_to_id(self, token: str) -> int | None:
        # piece_to_id answers unk_id for unknown pieces; only a round trip proves membership.
        token_id = self._sp.piece_to_id(token)
        return token_id if self._sp.id_to_piece(token_id) == token else None

    def id_to_token(self, token_id: int) -> str | None:
        if 0 <= token_id < self._sp.get_piece_size():
            return self._sp.id_to_piece(token_id)
        return None

    def _save_model(self, directory: Path) -> None:
        (directory / MODEL_FILE).write_bytes(self._proto)

    def __getstate__(self) -> dict:
        # The C++ processor does not pickle; it is rebuilt from the serialized model.
        state = self.__dict__.copy()
        del state["_sp"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._sp = sentencepiece.SentencePieceProcessor(model_proto=self._proto)


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
