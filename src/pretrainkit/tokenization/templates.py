"""Where special tokens go around one or two segments (the family's input template).

A template is what HF `tokenizers` calls a TemplateProcessing: a sequence of items, each a
segment (``$A``, ``$B``) or a special token string, with the token-type id of that item. BERT is
``[CLS] $A [SEP]`` / ``[CLS] $A [SEP] $B:1 [SEP]:1``, RoBERTa ``<s> $A </s>`` /
``<s> $A </s> </s> $B </s>``, GPT-2 ``$A``, LLaMA ``<s> $A``, T5 ``$A </s>``. It is saved in
tokenizer_config.json and read from / written to a tokenizer.json ``post_processor``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pretrainkit.errors import DataError

Item = tuple[str, int]  # ("$A" | "$B" | special token string, token-type id)
SEGMENTS = ("$A", "$B")


@dataclass(frozen=True)
class Template:
    """Special tokens around one segment (``single``) or two (``pair``)."""

    single: tuple[Item, ...]
    pair: tuple[Item, ...]

    def __post_init__(self) -> None:
        for name, items, wanted in (
            ("single", self.single, ["$A"]),
            ("pair", self.pair, ["$A", "$B"]),
        ):
            if [s for s, _ in items if s in SEGMENTS] != wanted:
                raise DataError(f"template {name} must hold {' then '.join(wanted)}: {items}")

    def num_special(self, pair: bool) -> int:
        """How many special tokens the template adds."""
        return sum(1 for item, _ in (self.pair if pair else self.single) if item not in SEGMENTS)

    def specials(self) -> list[str]:
        """The special token strings the template uses."""
        return sorted({item for item, _ in self.single + self.pair if item not in SEGMENTS})

    def apply(
        self, a: list[int], b: list[int] | None, token_id: Callable[[str], int]
    ) -> tuple[list[int], list[int]]:
        """``(input_ids, token_type_ids)`` of ``a`` (and ``b``) wrapped by the template."""
        segments = {"$A": a, "$B": b or []}
        ids: list[int] = []
        types: list[int] = []
        for item, type_id in self.pair if b is not None else self.single:
            part = segments[item] if item in segments else [token_id(item)]
            ids += part
            types += [type_id] * len(part)
        return ids, types

    def to_json(self) -> dict[str, list[list[Any]]]:
        return {"single": [list(i) for i in self.single], "pair": [list(i) for i in self.pair]}

    @classmethod
    def from_json(cls, data: Any, where: object) -> Template:
        try:
            return cls(
                tuple((str(s), int(t)) for s, t in data["single"]),
                tuple((str(s), int(t)) for s, t in data["pair"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(
                f"template must be {{'single': [[item, type_id], ...], 'pair': [...]}}: {err}",
                where,
            ) from None


def bert_template(cls: str, sep: str) -> Template:
    """``cls $A sep`` / ``cls $A sep $B:1 sep:1`` (BERT, ALBERT; every tokenizer's default)."""
    return Template(
        ((cls, 0), ("$A", 0), (sep, 0)), ((cls, 0), ("$A", 0), (sep, 0), ("$B", 1), (sep, 1))
    )


def roberta_template(cls: str, sep: str) -> Template:
    """``cls $A sep`` / ``cls $A sep sep $B sep``, all type 0 (RoBERTa, XLM-R, BART)."""
    single = ((cls, 0), ("$A", 0), (sep, 0))
    return Template(single, (*single, (sep, 0), ("$B", 0), (sep, 0)))


def around(prefix: list[str], suffix: list[str], repeat_in_pair: bool = True) -> Template:
    """``prefix $A suffix`` / ``prefix $A suffix prefix $B suffix``, all type 0.

    GPT-2: no tokens; LLaMA: ``<s>`` before; T5: ``</s>`` after each segment. With
    ``repeat_in_pair`` False the pair is ``prefix $A $B suffix`` (PEGASUS).
    """
    pre, post = tuple((t, 0) for t in prefix), tuple((t, 0) for t in suffix)
    single = (*pre, ("$A", 0), *post)
    if repeat_in_pair:
        return Template(single, (*single, *pre, ("$B", 0), *post))
    return Template(single, (*pre, ("$A", 0), ("$B", 0), *post))


def bos_eos_template(bos: str, eos: str, add_bos: bool, add_eos: bool) -> Template:
    """HF's LLaMA-style template from its ``add_bos_token`` / ``add_eos_token`` flags.

    ``<s> $A`` (and ``</s>`` after it with ``add_eos``); the pair repeats it for ``$B`` with
    token type 1.
    """
    pre, post = ([bos] if add_bos else []), ([eos] if add_eos else [])
    first = (*((t, 0) for t in pre), ("$A", 0), *((t, 0) for t in post))
    second = (*((t, 1) for t in pre), ("$B", 1), *((t, 1) for t in post))
    return Template(first, first + second)


def from_post_processor(processor: Any, where: object) -> Template | None:
    """The template of a tokenizer.json ``post_processor``; None when there is none.

    Reads TemplateProcessing, BertProcessing, RobertaProcessing, and the first of those inside
    a Sequence; ByteLevel alone (GPT-2) adds no tokens.
    """
    if not isinstance(processor, dict):
        return None
    kind = processor.get("type")
    if kind == "Sequence":
        for inner in processor.get("processors", []):
            if isinstance(inner, dict) and inner.get("type") != "ByteLevel":
                return from_post_processor(inner, where)
        return around([], [])
    if kind == "ByteLevel":
        return around([], [])
    if kind == "BertProcessing":
        return bert_template(processor["cls"][0], processor["sep"][0])
    if kind == "RobertaProcessing":
        return roberta_template(processor["cls"][0], processor["sep"][0])
    if kind == "TemplateProcessing":

        def items(entries: list[dict[str, Any]]) -> tuple[Item, ...]:
            out = []
            for entry in entries:
                if "Sequence" in entry:
                    out.append((f"${entry['Sequence']['id']}", int(entry["Sequence"]["type_id"])))
                else:
                    token = entry["SpecialToken"]
                    out.append((str(token["id"]), int(token["type_id"])))
            return tuple(out)

        return Template(items(processor["single"]), items(processor["pair"]))
    raise DataError(f"post_processor {kind!r} is not supported", where)


def to_post_processor(template: Template, token_id: Callable[[str], int]) -> dict[str, Any]:
    """A tokenizer.json TemplateProcessing equal to ``template``."""

    def entries(items: tuple[Item, ...]) -> list[dict[str, Any]]:
        return [
            {"Sequence": {"id": item[1:], "type_id": t}}
            if item in SEGMENTS
            else {"SpecialToken": {"id": item, "type_id": t}}
            for item, t in items
        ]

    return {
        "type": "TemplateProcessing",
        "single": entries(template.single),
        "pair": entries(template.pair),
        "special_tokens": {
            t: {"id": t, "ids": [token_id(t)], "tokens": [t]} for t in template.specials()
        },
    }
