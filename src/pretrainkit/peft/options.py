"""Options of the parameter-efficient methods, free of torch for the command line.

Each method's options are a dataclass; ``OPTIONS`` maps every method name to its class (None: no
options). tests/test_peft.py checks that these names are the registered methods'.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pretrainkit.errors import ConfigError

# The projections LoRA can wrap: attention (query, key, value, output) and feed-forward (up,
# down and, in gated feed-forwards, gate), as pretrainkit.layers names them.
LORA_PROJECTIONS = ("query", "key", "value", "output", "up", "down", "gate")
ADAPTER_PLACES = ("attention", "ffn")


def _names(text: str, key: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(","))
    if not all(names):
        raise ConfigError(f"{key}: expected names separated by commas, got {text!r}")
    return names


@dataclass
class LoraOptions:
    lora_rank: int = 8
    """LoRA: rank r of the update B·A added to every chosen projection."""

    lora_alpha: float = 16.0
    """LoRA: the update is scaled by alpha / rank."""

    lora_dropout: float = 0.0
    """LoRA: dropout on the input of the low-rank path (training only)."""

    lora_targets: str = "query,value"
    """LoRA: projections to wrap, comma-separated, among query, key, value, output (attention)
    and up, down, gate (feed-forward)."""

    def __post_init__(self) -> None:
        if not isinstance(self.lora_rank, int) or self.lora_rank < 1:
            raise ConfigError(
                f"lora_rank: the rank must be an integer of at least 1, got {self.lora_rank!r}"
            )
        if not self.lora_alpha > 0:
            raise ConfigError(f"lora_alpha: must be positive, got {self.lora_alpha!r}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"lora_dropout: must be in [0, 1), got {self.lora_dropout!r}")
        unknown = [n for n in self.targets if n not in LORA_PROJECTIONS]
        if unknown:
            raise ConfigError(
                f"lora_targets: unknown projection(s) {', '.join(unknown)}; the projections "
                f"are {', '.join(LORA_PROJECTIONS)}"
            )

    @property
    def targets(self) -> tuple[str, ...]:
        return _names(self.lora_targets, "lora_targets")

    @property
    def scale(self) -> float:
        return self.lora_alpha / self.lora_rank


@dataclass
class AdapterOptions:
    adapter_size: int = 64
    """Adapters: bottleneck width of every adapter (down to it, up back to hidden)."""

    adapter_places: str = "attention,ffn"
    """Adapters: after the attention and/or the feed-forward sub-layer of every block
    (attention,ffn is Houlsby's placement)."""

    def __post_init__(self) -> None:
        if not isinstance(self.adapter_size, int) or self.adapter_size < 1:
            raise ConfigError(
                f"adapter_size: must be an integer of at least 1, got {self.adapter_size!r}"
            )
        unknown = [p for p in self.places if p not in ADAPTER_PLACES]
        if unknown:
            raise ConfigError(
                f"adapter_places: unknown place(s) {', '.join(unknown)}; choose from "
                f"{', '.join(ADAPTER_PLACES)}"
            )

    @property
    def places(self) -> tuple[str, ...]:
        return _names(self.adapter_places, "adapter_places")


# Method name → its options (None: the method has none).
OPTIONS: dict[str, type | None] = {
    "lora": LoraOptions,
    "adapter": AdapterOptions,
    "bitfit": None,
    "layernorm": None,
}


# The file that makes a folder a PEFT folder (pretrainkit.peft.folder writes it).
PEFT_RECORD = "peft.json"


def is_peft_folder(directory: str | os.PathLike) -> bool:
    """``directory`` (or its ``model/``, a run folder) is a PEFT folder; torch-free."""
    directory = Path(directory)
    return any((folder / PEFT_RECORD).is_file() for folder in (directory, directory / "model"))
