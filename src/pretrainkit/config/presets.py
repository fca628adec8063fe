"""Named model presets shipped inside the package (``presets/*.yaml``)."""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from pretrainkit.config.model_config import ModelConfig
from pretrainkit.config.typed import apply_overrides, load_yaml, read_yaml_file
from pretrainkit.errors import ConfigError, closest


def _preset_files() -> dict[str, Any]:
    folder = resources.files("pretrainkit") / "presets"
    return {p.name[: -len(".yaml")]: p for p in folder.iterdir() if p.name.endswith(".yaml")}


def list_presets() -> list[str]:
    return sorted(_preset_files())


def preset_summary(name: str) -> str:
    """The leading comment block of a preset file, as one line: what it reproduces."""
    words = []
    for line in _preset_files()[name].read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        words.append(line.lstrip("# ").strip())
    return " ".join(w for w in words if w)


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
            where = f"preset {text_spec}"
            data = load_yaml(presets[text_spec].read_text(encoding="utf-8"), where)
        elif path.is_dir() and (path / "config.yaml").is_file():
            where = str(path / "config.yaml")
            data = read_yaml_file(path / "config.yaml")
        elif path.is_file():
            where = str(path)
            data = read_yaml_file(path)
        else:
            raise ConfigError(
                f"{text_spec!r} is neither a preset nor a YAML file{closest(text_spec, presets)}; "
                f"presets: {', '.join(sorted(presets))}"
            )
    if overrides:
        data = apply_overrides(data, overrides)
    return ModelConfig.from_dict(data, where=where)
