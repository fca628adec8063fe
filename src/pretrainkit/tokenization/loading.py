"""`load_tokenizer`: one entry point for every vocabulary format pretrainkit reads."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer as HFBackend

from pretrainkit.errors import DataError
from pretrainkit.tokenization import hf, spm, templates
from pretrainkit.tokenization.base import CONFIG_FILE, CONFIG_VERSION, SPECIAL_ROLES, Tokenizer

_EXPECTED = (
    f"a folder written by Tokenizer.save ({CONFIG_FILE}), a BERT vocab.txt, a GPT-2 "
    "vocab.json + merges.txt pair, a SentencePiece .model file or a tokenizer.json"
)


def load_tokenizer(path: str | Path, lowercase: bool | None = None) -> Tokenizer:
    """Load a tokenizer from any supported vocabulary format.

    Args:
        path: a folder written by `Tokenizer.save`; a BERT `vocab.txt`; a GPT-2 vocabulary
            (`vocab.json` or one token a line) with its merges file beside it (found by
            replacing "vocab" with "merges" in the name), or the folder holding both; a
            SentencePiece `.model`; or a HuggingFace `tokenizer.json`.
        lowercase: for a BERT `vocab.txt` only; None detects it from the vocabulary (a vocabulary
            without upper-case entries is uncased).

    Returns:
        The tokenizer.

    Raises:
        DataError: the path does not exist or holds no recognised vocabulary.
    """
    path = Path(path)
    if not path.exists():
        raise DataError("tokenizer file or folder not found", path)
    if path.is_dir():
        return _load_dir(path, lowercase)
    if path.name == CONFIG_FILE:
        return _load_saved(path.parent)
    if path.suffix == ".model":
        return spm.sentencepiece_from_file(path)
    if path.name == hf.MODEL_FILE:
        return hf_json_tokenizer(path)
    merges = _merges_beside(path)
    if merges is not None:
        return hf.bpe_from_files(path, merges)
    if path.suffix == ".json":
        raise DataError(
            f"no merges file found beside this GPT-2 vocabulary; expected {_EXPECTED}", path
        )
    return hf.wordpiece_from_vocab(path, lowercase)


def _load_dir(directory: Path, lowercase: bool | None) -> Tokenizer:
    if (directory / CONFIG_FILE).is_file():
        return _load_saved(directory)
    for name in ("vocab.json", "vocab.txt"):
        vocab = directory / name
        if vocab.is_file():
            merges = _merges_beside(vocab)
            if merges is not None:
                return hf.bpe_from_files(vocab, merges)
            if name == "vocab.txt":
                return hf.wordpiece_from_vocab(vocab, lowercase)
    models = sorted(directory.glob("*.model"))
    if len(models) == 1:
        return spm.sentencepiece_from_file(models[0])
    if (directory / hf.MODEL_FILE).is_file():
        return hf_json_tokenizer(directory / hf.MODEL_FILE)
    raise DataError(f"no tokenizer found in this folder; expected {_EXPECTED}", directory)


def _merges_beside(vocab: Path) -> Path | None:
    """The merges file that belongs to a BPE vocabulary file, or None."""
    if "vocab" not in vocab.name:
        return None
    stem = vocab.name.replace("vocab", "merges")
    for candidate in (Path(stem).with_suffix(".txt").name, stem):
        if (vocab.parent / candidate).is_file():
            return vocab.parent / candidate
    return None


def _load_saved(directory: Path) -> Tokenizer:
    config_path = directory / CONFIG_FILE
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"not valid JSON: {err.msg}", config_path, err.lineno) from None
    except UnicodeDecodeError:
        raise DataError("not UTF-8", config_path) from None
    required = ("format_version", "backend", "kind", "lowercase", "special_tokens")
    missing = (
        [key for key in required if key not in config] if isinstance(config, dict) else required
    )
    if missing:
        raise DataError(f"missing keys {', '.join(missing)}", config_path)
    if config["format_version"] != CONFIG_VERSION:
        raise DataError(
            f"format_version {config['format_version']} is not supported (expected {CONFIG_VERSION})",
            config_path,
        )
    specials = {role: config["special_tokens"].get(role) for role in SPECIAL_ROLES}
    template = (
        templates.Template.from_json(config["template"], config_path)
        if "template" in config
        else None
    )
    if config["backend"] == "hf":
        model_path = directory / hf.MODEL_FILE
        if not model_path.is_file():
            raise DataError("file not found", model_path)
        backend = read_hf_backend(model_path)
        return _with_path(
            config_path,
            hf.HFTokenizer,
            backend,
            config["kind"],
            config["lowercase"],
            specials,
            template,
        )
    if config["backend"] == "sentencepiece":
        model_path = directory / spm.MODEL_FILE
        if not model_path.is_file():
            raise DataError("file not found", model_path)
        proto = model_path.read_bytes()
        return _with_path(
            config_path,
            spm.SentencePieceTokenizer,
            proto,
            specials,
            config["kind"],
            config["lowercase"],
            template,
            spm.IdLayout.from_json(config["layout"], config_path) if "layout" in config else None,
        )
    raise DataError(
        f"unknown backend {config['backend']!r} (expected hf or sentencepiece)", config_path
    )


# Conventional special-token strings, for tokenizer.json files that come without a config.
_ANGLE_SPECIALS = {"pad": "<pad>", "unk": "<unk>", "bos": "<s>", "eos": "</s>", "mask": "<mask>"}


def read_hf_backend(path: Path) -> HFBackend:
    """A tokenizer.json as a `tokenizers.Tokenizer`, without fixed padding or truncation.

    HF files may fix them (MiniLM pads to 128); pretrainkit pads per batch and truncates in
    `build_inputs` instead.
    """
    try:
        backend = HFBackend.from_file(str(path))
    except Exception as err:  # the Rust parser raises a bare Exception
        raise DataError(f"not a valid tokenizer.json: {err}", path) from None
    backend.no_padding()
    backend.no_truncation()
    return backend


def hf_json_tokenizer(path: Path, specials: dict[str, str | None] | None = None) -> Tokenizer:
    """A HuggingFace tokenizer.json; its post_processor gives the template (none: no tokens).

    Args:
        path: the tokenizer.json.
        specials: role -> token, as the model's tokenizer_config.json declares them; None reads
            them off the vocabulary (BERT's [CLS] ..., RoBERTa's <s> ..., <pad> <unk> <s> </s>
            <mask> where present, or GPT-2's <|endoftext|>).
    """
    backend = read_hf_backend(path)
    data = json.loads(backend.to_str())
    model_type = data["model"].get("type")
    kind = {"WordPiece": "wordpiece", "BPE": "bpe", "Unigram": "unigram"}.get(model_type)
    if kind is None:
        raise DataError(f"tokenizer model {model_type!r} is not supported", path)
    vocab = backend.get_vocab(with_added_tokens=True)
    if specials is None:
        specials = _guess_specials(vocab)
        if specials is None:
            raise DataError(
                f"cannot tell the special tokens of this {model_type} tokenizer; save it with "
                "pretrainkit (Tokenizer.save) to record them",
                path,
            )
    # Without a post_processor HF adds no special tokens, and neither do we.
    template = templates.from_post_processor(data.get("post_processor"), path)
    template = template or templates.around([], [])
    lowercase = kind == "wordpiece" and hf.looks_lowercase(vocab)
    return _with_path(path, hf.HFTokenizer, backend, kind, lowercase, specials, template)


def _guess_specials(vocab: dict[str, int]) -> dict[str, str | None] | None:
    for full in (hf.WORDPIECE_SPECIALS, hf.ROBERTA_SPECIALS):
        if all(t in vocab for t in full.values()):
            return dict(full)
    found: dict[str, str | None] = {r: t for r, t in _ANGLE_SPECIALS.items() if t in vocab}
    if "eos" in found or "bos" in found:
        return found
    if hf.GPT2_EOT in vocab:
        return {"unk": hf.GPT2_EOT, "bos": hf.GPT2_EOT, "eos": hf.GPT2_EOT}
    return None


def _with_path(path: Path, factory, *args) -> Tokenizer:  # type: ignore[no-untyped-def]
    """Build a tokenizer; a missing special token is reported against `path`."""
    try:
        return factory(*args)
    except DataError as err:
        if err.path is None:
            raise DataError(str(err), path) from None
        raise
