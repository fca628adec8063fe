"""pretrainkit: assemble Transformer models from named parts, pre-train, fine-tune and serve.

Names are imported on first use: preprocessing worker processes import this package and must
not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pretrainkit' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
