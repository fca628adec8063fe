"""pretrainkit: assemble Transformer models from named parts, pre-train, fine-tune and serve.

Names are imported on first use: preprocessing worker processes import this package and must
not pay for importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pretrainkit.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "Model": "pretrainkit.model",
    "ModelOutput": "pretrainkit.model",
    "build_model": "pretrainkit.model",
    "load": "pretrainkit.folders",
    "ModelConfig": "pretrainkit.config",
    "list_presets": "pretrainkit.config",
    "load_model_config": "pretrainkit.config",
}

if TYPE_CHECKING:
    from pretrainkit.config import ModelConfig, list_presets, load_model_config
    from pretrainkit.folders import load
    from pretrainkit.model import Model, ModelOutput, build_model

__all__ = [
    "Model",
    "ModelConfig",
    "ModelOutput",
    "build_model",
    "list_presets",
    "load",
    "load_model_config",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
