"""The tokenizer files of a HF model folder, read into a pretrainkit `Tokenizer` and written back.

Import reads, in this order: BERT's vocab.txt, byte-level BPE vocab.json + merges.txt (GPT-2,
RoBERTa, BART), tokenizer.json (any family: the special tokens come from tokenizer_config.json,
the template from its post_processor), or a SentencePiece .model of a class in `SPM_CLASSES`
(LLaMA, XLM-R, T5, PEGASUS), laid out with that class's ids. Export writes files that
`transformers.AutoTokenizer` loads with the same ids.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pretrainkit.convert.files import optional_json, read_json
from pretrainkit.errors import CheckpointError, DataError
from pretrainkit.tokenization import SPECIAL_ROLES, Tokenizer, load_tokenizer, templates
from pretrainkit.tokenization.hf import ROBERTA_SPECIALS
from pretrainkit.tokenization.loading import hf_json_tokenizer
from pretrainkit.tokenization.spm import (
    IdLayout,
    SentencePieceTokenizer,
    piece_count,
    read_model_info,
)

log = logging.getLogger(__name__)

TOKENIZER_CONFIG = "tokenizer_config.json"


@dataclass(frozen=True)
class SpmClass:
    """How a HF tokenizer class lays out a SentencePiece model.

    Attributes:
        file: the .model file's name in the HF folder.
        specials: role -> token.
        layout: (piece count, tokenizer_config.json) -> our ids around the model's.
        template: tokenizer_config.json -> where the special tokens go.
        settings: our tokenizer -> the class's own tokenizer_config.json keys on export.
    """

    file: str
    specials: dict[str, str | None]
    layout: Callable[[int, dict[str, Any]], IdLayout]
    template: Callable[[dict[str, Any]], templates.Template]
    settings: Callable[[Tokenizer], dict[str, Any]] = lambda tokenizer: {}


def _fairseq(size: int, config: dict[str, Any]) -> IdLayout:
    # fairseq's dictionary: <s> <pad> </s> <unk> first, the pieces after them, <mask> last.
    first = [("<s>", 0), ("<pad>", 1), ("</s>", 2), ("<unk>", 3)]
    return IdLayout(1, (*first, ("<mask>", size + 1)))


def _t5(size: int, config: dict[str, Any]) -> IdLayout:
    # Sentinels after the pieces, in reverse: <extra_id_0> has the largest id.
    extra = int(config.get("extra_ids", 100))
    return IdLayout(0, tuple((f"<extra_id_{i}>", size + extra - 1 - i) for i in range(extra)))


def _pegasus(size: int, config: dict[str, Any]) -> IdLayout:
    # <pad> </s> <mask_1> <mask_2> <unk_2> ... <unk_{offset-1}>, then the pieces shifted.
    offset = int(config.get("offset", 103))
    first = ["<pad>", "</s>", "<mask_1>", "<mask_2>", *(f"<unk_{i}>" for i in range(2, offset))]
    return IdLayout(offset, tuple((token, i) for i, token in enumerate(first)))


def _flag(config: dict[str, Any], key: str) -> bool:
    return bool(config.get(key, False))


SPM_CLASSES = {
    "LlamaTokenizer": SpmClass(
        "tokenizer.model",
        {"unk": "<unk>", "bos": "<s>", "eos": "</s>"},
        lambda size, config: IdLayout(),
        lambda config: templates.bos_eos_template(
            "<s>", "</s>", _flag(config, "add_bos_token"), _flag(config, "add_eos_token")
        ),
        lambda tokenizer: {
            "add_bos_token": tokenizer.template.single[0][0] != "$A",
            "add_eos_token": tokenizer.template.single[-1][0] != "$A",
        },
    ),
    "XLMRobertaTokenizer": SpmClass(
        "sentencepiece.bpe.model",
        dict(ROBERTA_SPECIALS),
        _fairseq,
        lambda config: templates.roberta_template("<s>", "</s>"),
    ),
    "T5Tokenizer": SpmClass(
        "spiece.model",
        {"pad": "<pad>", "unk": "<unk>", "eos": "</s>"},
        _t5,
        lambda config: templates.around([], ["</s>"]),
        lambda tokenizer: {"extra_ids": _count_added(tokenizer, "<extra_id_")},
    ),
    "PegasusTokenizer": SpmClass(
        "spiece.model",
        {"pad": "<pad>", "unk": "<unk>", "eos": "</s>", "mask": "<mask_2>"},
        _pegasus,
        lambda config: templates.around([], ["</s>"], repeat_in_pair=False),
        lambda tokenizer: {"offset": getattr(getattr(tokenizer, "layout", None), "offset", 103)},
    ),
}


def _count_added(tokenizer: Tokenizer, prefix: str) -> int:
    layout = getattr(tokenizer, "layout", None)
    return sum(1 for token, _ in (layout.added if layout else ()) if token.startswith(prefix))


def _spm_class(name: Any) -> SpmClass | None:
    return SPM_CLASSES.get(str(name).removesuffix("Fast"))


def import_tokenizer(directory: Path) -> Tokenizer | None:
    """The HF folder's tokenizer as ours, with HF's lower-casing; None when it has none.

    Raises:
        CheckpointError: a tokenizer file that is malformed or does not fit its config.
    """
    tok_config = optional_json(directory / TOKENIZER_CONFIG)
    try:
        return _import(directory, tok_config)
    except DataError as err:
        raise CheckpointError(f"tokenizer not imported: {err}") from None


def _import(directory: Path, tok_config: dict[str, Any]) -> Tokenizer | None:
    lowercase = tok_config.get("do_lower_case")
    if optional_json(directory / "sentence_bert_config.json").get("do_lower_case"):
        lowercase = True  # sentence-transformers lower-cases before the tokenizer
    if (directory / "vocab.txt").is_file():
        for key, supported in (("strip_accents", None), ("tokenize_chinese_chars", True)):
            value = tok_config.get(key, supported)
            if value != supported:
                raise CheckpointError(
                    f"{directory}: tokenizer option {key}={value!r} is not supported yet"
                )
        return load_tokenizer(directory / "vocab.txt", lowercase=lowercase)
    if (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
        if lowercase:
            raise CheckpointError(f"{directory}: lower-casing byte-level BPE is not supported")
        return load_tokenizer(directory / "vocab.json")
    if (directory / "tokenizer.json").is_file():
        return hf_json_tokenizer(directory / "tokenizer.json", declared_specials(directory))
    spm_class = _spm_class(tok_config.get("tokenizer_class"))
    if spm_class is not None and (directory / spm_class.file).is_file():
        return _import_spm(directory / spm_class.file, spm_class, tok_config)
    present = [p.name for p in directory.glob("*.model")]
    if present:
        log.warning(
            "%s: tokenizer %s of class %r not imported (SentencePiece files are read for %s)",
            directory,
            present,
            tok_config.get("tokenizer_class"),
            ", ".join(SPM_CLASSES),
        )
    return None


def _import_spm(path: Path, spm_class: SpmClass, tok_config: dict[str, Any]) -> Tokenizer:
    try:
        proto = path.read_bytes()
        model_type, normalizer = read_model_info(proto)
        size = piece_count(proto)
    except (RuntimeError, ValueError, IndexError) as err:
        raise DataError(f"not a SentencePiece model: {err}", path) from None
    # do_lower_case is not read: these classes leave case to the model's own normalizer.
    return SentencePieceTokenizer(
        proto,
        dict(spm_class.specials),
        model_type,
        normalizer.endswith("_cf"),
        spm_class.template(tok_config),
        spm_class.layout(size, tok_config),
    )


def declared_specials(directory: Path) -> dict[str, str | None] | None:
    """Role -> token from tokenizer_config.json / special_tokens_map.json; None if none."""
    found: dict[str, str | None] = {}
    for name in ("special_tokens_map.json", TOKENIZER_CONFIG):
        config = optional_json(directory / name)
        for role in SPECIAL_ROLES:
            value = config.get(f"{role}_token")
            if isinstance(value, dict):  # a serialized AddedToken
                value = value.get("content")
            if isinstance(value, str):
                found[role] = value
    return found or None


def export_tokenizer(tokenizer: Tokenizer, directory: Path, tokenizer_class: str) -> list[str]:
    """Write files that ``transformers.AutoTokenizer`` loads as ``tokenizer_class``.

    WordPiece as BertTokenizer: vocab.txt; byte-level BPE as RobertaTokenizer: vocab.json +
    merges.txt; any other HF-backed tokenizer: tokenizer.json (with the template as its
    post_processor, plus vocab.json + merges.txt for byte-level BPE); a SentencePiece tokenizer:
    its .model under the class's file name (`SPM_CLASSES`). Always tokenizer_config.json.

    Returns the names written; an empty list (and a warning) when the class cannot express it.
    """
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save(tmp)
        path = Path(tmp) / "tokenizer.json"
        data = read_json(path) if path.is_file() else None
    declared = {f"{role}_token": token for role, token in tokenizer.special_tokens.items() if token}
    legacy = {k: v for k, v in declared.items() if k not in ("bos_token", "eos_token")}
    model = data["model"] if data else {}
    spm_class = _spm_class(tokenizer_class)
    if model.get("type") == "WordPiece" and tokenizer_class == "BertTokenizer":
        written = [_write_vocab_txt(model["vocab"], directory)]
        config = {"do_lower_case": tokenizer.lowercase, **legacy}
    elif model.get("type") == "BPE" and tokenizer_class == "RobertaTokenizer":
        written = _write_vocab_merges(model, directory)
        config = {"bos_token": "<s>", "eos_token": "</s>", **legacy}
    elif data is not None:
        data["post_processor"] = templates.to_post_processor(
            tokenizer.template, tokenizer.template_token_id
        )
        _write_json(directory / "tokenizer.json", data)
        written = ["tokenizer.json"]
        if model.get("type") == "BPE" and _byte_level(data):
            written += _write_vocab_merges(model, directory)
        config = dict(declared)
    elif (
        isinstance(tokenizer, SentencePieceTokenizer)
        and spm_class is not None
        and _fits(tokenizer, spm_class)
    ):
        (directory / spm_class.file).write_bytes(tokenizer.model_proto)
        written = [spm_class.file]
        # The specials are the class's defaults (checked); naming them can move ids in
        # transformers (an explicit mask_token drops PEGASUS' <mask_1>).
        config = spm_class.settings(tokenizer)
    else:
        log.warning(
            "a %s %s tokenizer is not exported as %s; copy it by hand",
            tokenizer.backend,
            tokenizer.kind,
            tokenizer_class,
        )
        return []
    config["tokenizer_class"] = tokenizer_class
    _write_json(directory / TOKENIZER_CONFIG, config)
    return [*written, TOKENIZER_CONFIG]


def _fits(tokenizer: SentencePieceTokenizer, spm_class: SpmClass) -> bool:
    """Whether HF's class, given our settings, lays out and wraps ids exactly as we do."""
    settings = spm_class.settings(tokenizer)
    return (
        (tokenizer.layout or IdLayout()) == spm_class.layout(tokenizer.piece_count, settings)
        and tokenizer.template == spm_class.template(settings)
        and all(tokenizer.special_tokens[r] == t for r, t in spm_class.specials.items())
    )


def _byte_level(data: dict[str, Any]) -> bool:
    return "ByteLevel" in json.dumps(data.get("pre_tokenizer"))


def _write_vocab_txt(vocab: dict[str, int], directory: Path) -> str:
    by_id = {i: token for token, i in vocab.items()}
    # A source vocab.txt with duplicate lines leaves ids without an entry; keep them as
    # placeholders so every later id stays on its line.
    lines = [by_id.get(i, f"[unused-hole-{i}]") for i in range(max(by_id) + 1)]
    (directory / "vocab.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return "vocab.txt"


def _write_vocab_merges(model: dict[str, Any], directory: Path) -> list[str]:
    _write_json(directory / "vocab.json", model["vocab"])
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (directory / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8"
    )
    return ["vocab.json", "merges.txt"]


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
