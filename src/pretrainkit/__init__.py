"""pretrainkit: assemble Transformer models from named parts, pre-train, fine-tune and serve."""

from pretrainkit.config import ModelConfig, list_presets, load_model_config
from pretrainkit.model import Model, ModelOutput, build_model, load

__version__ = "0.1.0"

__all__ = [
    "Model",
    "ModelConfig",
    "ModelOutput",
    "build_model",
    "list_presets",
    "load",
    "load_model_config",
]
