"""Typed configuration: model sections, YAML loading and presets by name."""

from pretrainkit.config.model_config import (
    DecoderConfig,
    EmbeddingConfig,
    EncoderConfig,
    ModelConfig,
    TargetConfig,
)
from pretrainkit.config.presets import list_presets, load_model_config

__all__ = [
    "DecoderConfig",
    "EmbeddingConfig",
    "EncoderConfig",
    "ModelConfig",
    "TargetConfig",
    "list_presets",
    "load_model_config",
]
