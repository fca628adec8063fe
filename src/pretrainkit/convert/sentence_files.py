"""The sentence-transformers files of a HF folder (modules.json, pooling, normalisation) and the
``encode`` defaults (``encode.json``) they stand for."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from pretrainkit.convert.files import optional_json, read_json
from pretrainkit.errors import CheckpointError
from pretrainkit.fileio import inside

log = logging.getLogger(__name__)

# Pooling flags of sentence-transformers' Pooling config ↔ our ``encode`` pooling names.
ST_POOLING = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
}
# sentence-transformers ≥ 6 saves one ``pooling_mode`` string instead of the flags.
ST_POOLING_MODES = {"cls": "cls", "mean": "mean", "max": "max"}
MODULES = "modules.json"
ST_CONFIG = "sentence_bert_config.json"


def sentence_transformers_defaults(directory: Path) -> dict[str, Any]:
    """``encode`` defaults (pooling, normalize, max_length) of a sentence-transformers folder.

    Raises CheckpointError on modules we cannot reproduce (Dense, ...), rather than returning
    embeddings that differ from the original.
    """
    modules = _optional_json_list(directory / MODULES)
    if not modules:
        return {}
    defaults: dict[str, Any] = {"normalize": False}
    here = Path(os.path.normpath(directory))
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        path = str(module.get("path") or "")
        # Every module folder must lie inside this one, whether or not it is read.
        folder = inside(directory, path, directory / MODULES) if path else here
        if kind == "Transformer":
            if folder != here:
                raise CheckpointError(
                    f"{directory}: the transformer lives in {path!r}; convert that "
                    "folder (its pooling settings are then not recorded)"
                )
            continue
        if kind == "Pooling":
            if not path:
                raise CheckpointError(f"{directory / MODULES}: the Pooling module has no path")
            defaults["pooling"] = _pooling(directory, folder / "config.json")
        elif kind == "Normalize":
            defaults["normalize"] = True
        else:
            raise CheckpointError(
                f"{directory}: sentence-transformers module {module.get('type')} is not "
                "supported yet"
            )
    max_length = optional_json(directory / ST_CONFIG).get("max_seq_length")
    if max_length:
        defaults["max_length"] = int(max_length)
    return defaults


def _pooling(directory: Path, path: Path) -> str:
    config = read_json(path)
    mode = config.get("pooling_mode")
    if isinstance(mode, str):
        modes, others = ([ST_POOLING_MODES[mode]], []) if mode in ST_POOLING_MODES else ([], [mode])
    else:
        modes = [mode for key, mode in ST_POOLING.items() if config.get(key)]
        others = [
            key
            for key, on in config.items()
            if key.startswith("pooling_mode_") and on and key not in ST_POOLING
        ]
    if len(modes) != 1 or others:
        raise CheckpointError(
            f"{directory}: sentence-transformers pooling {modes + others} is not supported yet "
            "(one of cls, mean, max)"
        )
    return modes[0]


def _optional_json_list(path: Path) -> list[dict[str, Any]]:
    data = read_json(path) if path.is_file() else []
    if not isinstance(data, list):
        return []
    odd = [entry for entry in data if not isinstance(entry, dict)]
    if odd:
        raise CheckpointError(f"{path}: expected a list of module objects, got {odd[0]!r}")
    return data


def write_sentence_transformers(
    defaults: dict[str, Any], hidden_size: int, max_length: int | None, directory: Path
) -> list[str]:
    """Write the files that make ``SentenceTransformer(directory)`` embed as ``Model.encode``.

    Args:
        defaults: the model's ``encode`` defaults (pooling, normalize, max_length).
        hidden_size: the embedding width.
        max_length: the longest input when ``defaults`` names none (the position table's).
        directory: the HF folder being written.

    Returns:
        The names written; empty (with a warning) when the pooling has no sentence-transformers
        equivalent (``first-last-avg``), so that no folder embeds differently from ours.
    """
    pooling = defaults.get("pooling", "mean")
    flags = {key: mode == pooling for key, mode in ST_POOLING.items()}
    if not any(flags.values()):
        log.warning(
            "pooling %r has no sentence-transformers equivalent; modules.json not written",
            pooling,
        )
        return []
    modules = [("", "sentence_transformers.models.Transformer")]
    modules.append(("1_Pooling", "sentence_transformers.models.Pooling"))
    if defaults.get("normalize"):
        modules.append(("2_Normalize", "sentence_transformers.models.Normalize"))
    entries = [
        {"idx": i, "name": str(i), "path": path, "type": kind}
        for i, (path, kind) in enumerate(modules)
    ]
    written = [MODULES, ST_CONFIG, "1_Pooling/config.json"]
    _write(directory / MODULES, entries)
    # Lower-casing, if any, is the tokenizer's own (do_lower_case in tokenizer_config.json).
    config: dict[str, Any] = {"do_lower_case": False}
    length = defaults.get("max_length") or max_length
    if length:
        config["max_seq_length"] = int(length)
    _write(directory / ST_CONFIG, config)
    (directory / "1_Pooling").mkdir()
    pooling_config = {"word_embedding_dimension": hidden_size, **flags}
    pooling_config["pooling_mode_mean_sqrt_len_tokens"] = False
    _write(directory / "1_Pooling" / "config.json", pooling_config)
    if defaults.get("normalize"):
        (directory / "2_Normalize").mkdir()  # Normalize has no settings; ST wants the folder
        written.append("2_Normalize/")
    return written


def _write(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
