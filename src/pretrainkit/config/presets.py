"""Named model presets shipped inside the package (``presets/*.yaml``)."""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from pretrainkit.config.model_config import ModelConfig
from pretrainkit.config.typed import apply_overrides
from pretrainkit.errors import ConfigError, closest


def _preset_files() -> dict[str, Any]:
    folder = resources.files("pretrainkit") / "presets"
    return {p.name[: -len(".yaml")]: p for p in folder.iterdir() if p.name.endswith(".yaml")}


def list_presets() -> list[str]:
    return sorted(_preset_files())


def preset_summary(name: str) -> str:
    """First comment line of a preset file: what it reproduces."""
    text = _preset_files()[name].read_text()
    first = text.splitlines()[0] if text else ""
    return first.lstrip("# ").strip()


def load_model_config(
    spec: str | Path | ModelConfig | Mapping, overrides: Mapping[str, Any] | None = None
) -> ModelConfig:
    """A preset name, a YAML path, a dict or a config object → a validated ``ModelConfig``.

    ``overrides`` sets dotted keys (``{"encoder.num_layers": 4}``) before validation.
    """
    if isinstance(spec, ModelConfig):
        if not overrides:
            return spec
        data, where = spec.to_dict(), spec.name
    elif isinstance(spec, Mapping):
        data, where = dict(spec), "model config"
    else:
        text_spec = str(spec)
        presets = _preset_files()
        path = Path(text_spec)
        if text_spec in presets:
            source, where = presets[text_spec].read_text(), f"preset {text_spec}"
        elif path.is_dir() and (path / "config.yaml").is_file():
            source, where = (path / "config.yaml").read_text(), str(path / "config.yaml")
        elif path.is_file():
            source, where = path.read_text(), str(path)
        else:
            raise ConfigError(
                f"{text_spec!r} is neither a preset nor a YAML file{closest(text_spec, presets)}; "
                f"presets: {', '.join(sorted(presets))}"
            )
        try:
            data = yaml.safe_load(source)
        except yaml.YAMLError as error:
            raise ConfigError(f"{where}: not valid YAML: {error}") from None
    if overrides:
        data = apply_overrides(data, overrides)
    return ModelConfig.from_dict(data, where=where)
