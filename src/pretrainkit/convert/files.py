"""Reading and writing the files of a HF model folder: config, weights and tokenizer (the
sentence-transformers settings are in ``convert.sentence_files``)."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from pretrainkit.errors import CheckpointError, DataError
from pretrainkit.tokenization import Tokenizer, load_tokenizer

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON: {err}") from None


def read_weights(directory: Path) -> tuple[dict[str, torch.Tensor], str]:
    """All tensors of a HF folder (single file or sharded) and the file they came from."""
    for name in WEIGHT_FILES:
        index = directory / f"{name}.index.json"
        if index.is_file():
            shards = sorted(set(read_json(index).get("weight_map", {}).values()))
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(_read_one(directory / shard))
            return state, str(index)
        if (directory / name).is_file():
            return _read_one(directory / name), str(directory / name)
    raise CheckpointError(
        f"{directory}: no weights ({', '.join(WEIGHT_FILES)} or a sharded index) found"
    )


def _read_one(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path}: weights shard not found")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    # Pickle files can run code; weights_only refuses anything but tensors and containers.
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def import_tokenizer(directory: Path) -> Tokenizer | None:
    """The HF folder's tokenizer as ours, with HF's lower-casing; None when it has none."""
    tok_config = optional_json(directory / "tokenizer_config.json")
    st_config = optional_json(directory / "sentence_bert_config.json")
    lowercase = tok_config.get("do_lower_case")
    if st_config.get("do_lower_case"):
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
        try:
            return _tokenizer_json_without_padding(directory / "tokenizer.json")
        except DataError as err:
            # GPT-2's <|endoftext|> or LLaMA's <s>/</s> are not special tokens our loader can
            # name yet; the weights are still worth converting, so say so and go on without.
            log.warning("%s: tokenizer.json not imported: %s", directory, err)
            return None
    present = [p.name for p in directory.glob("*.model")]
    if present:
        log.warning("%s: tokenizer %s not imported (not supported yet)", directory, present)
    return None


def _tokenizer_json_without_padding(path: Path) -> Tokenizer:
    # HF files may fix padding/truncation (MiniLM: pad to 128); ours pads per batch instead.
    data = read_json(path)
    data["padding"] = None
    data["truncation"] = None
    with tempfile.TemporaryDirectory() as tmp:
        clean = Path(tmp) / "tokenizer.json"
        clean.write_text(json.dumps(data), encoding="utf-8")
        return load_tokenizer(clean)


def optional_json(path: Path) -> dict[str, Any]:
    data = read_json(path) if path.is_file() else {}
    return data if isinstance(data, dict) else {}


def export_tokenizer(tokenizer: Tokenizer, directory: Path, tokenizer_class: str) -> list[str]:
    """Write HF-loadable vocabulary files (WordPiece vocab.txt, BPE vocab.json + merges.txt).

    Returns the names written; an empty list (and a warning) for kinds not exported yet.
    """
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save(tmp)
        path = Path(tmp) / "tokenizer.json"
        model = read_json(path)["model"] if path.is_file() else {}
    specials = {
        f"{role}_token": token
        for role, token in tokenizer.special_tokens.items()
        if token is not None and role in ("pad", "unk", "cls", "sep", "mask")
    }
    if model.get("type") == "WordPiece" and tokenizer_class == "BertTokenizer":
        by_id = {i: token for token, i in model["vocab"].items()}
        # A source vocab.txt with duplicate lines leaves ids without an entry; keep them as
        # placeholders so every later id stays on its line.
        lines = [by_id.get(i, f"[unused-hole-{i}]") for i in range(max(by_id) + 1)]
        (directory / "vocab.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        config = {"do_lower_case": tokenizer.lowercase, **specials}
        written = ["vocab.txt"]
    elif model.get("type") == "BPE" and tokenizer_class == "RobertaTokenizer":
        (directory / "vocab.json").write_text(json.dumps(model["vocab"]), encoding="utf-8")
        merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
        (directory / "merges.txt").write_text(
            "#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8"
        )
        config = {"bos_token": "<s>", "eos_token": "</s>", **specials}
        written = ["vocab.json", "merges.txt"]
    else:
        log.warning("a %s tokenizer is not exported to HF yet; copy it by hand", tokenizer.kind)
        return []
    config["tokenizer_class"] = tokenizer_class
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return [*written, "tokenizer_config.json"]
