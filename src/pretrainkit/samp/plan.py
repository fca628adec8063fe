"""A SAMP plan: one precision mode per encoder layer, plus the backend and float partner that
run it; and how a plan maps onto a model's GEMMs."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pretrainkit.errors import CheckpointError, ConfigError, closest

# float: every GEMM of the layer in the float partner; ffn: the feed-forward GEMMs in INT8,
# attention in float; full: every GEMM of the layer (attention and feed-forward) in INT8.
MODES = ("float", "ffn", "full")
FLOAT_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
from pretrainkit.model import SAMP_PLAN as PLAN_FILE  # noqa: E402

KERNEL_DEFAULT = "int_mm"
FORMAT = "pretrainkit-samp/1"


@dataclass
class Plan:
    """What runs in which precision.

    Attributes:
        modes: per stored encoder layer (``model.encoder.layers[i]``), one of ``MODES``.
        backend: ``torch`` or ``onnxruntime``.
        float_dtype: the float partner: ``fp32`` or ``bf16`` (never fp16 on CPU).
        kernel: the torch backend's INT8 kernel (``fused``, ``int_mm`` or ``fbgemm``).
        report: what the search measured (metric, latency ...), saved with the plan.
    """

    modes: list[str]
    backend: str = "torch"
    float_dtype: str = "fp32"
    kernel: str = KERNEL_DEFAULT
    report: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        for i, mode in enumerate(self.modes):
            if mode not in MODES:
                raise ConfigError(
                    f"plan: layer {i} mode {mode!r}{closest(mode, MODES)}; valid: {', '.join(MODES)}"
                )
        if self.float_dtype not in FLOAT_DTYPES:
            raise ConfigError(
                f"plan: float_dtype {self.float_dtype!r} is not one of {', '.join(FLOAT_DTYPES)}"
            )

    @property
    def name(self) -> str:
        """Short label: ``F`` float, ``f`` FFN-only INT8, ``Q`` full INT8, one letter a layer."""
        return "".join({"float": "F", "ffn": "f", "full": "Q"}[m] for m in self.modes)

    @property
    def is_float(self) -> bool:
        return all(m == "float" for m in self.modes)

    def write_files(self, model: Any, directory: Path) -> None:
        """Write what rebuilds the quantized ``model`` into the folder ``Model.save`` fills
        (the plan, its report and, for ONNX Runtime, the encoder graph)."""
        from pretrainkit.samp.api import write_plan_files

        write_plan_files(model, directory)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str) -> Plan:
        if data.get("format") != FORMAT:
            raise CheckpointError(f"{where}: not a SAMP plan (format {data.get('format')!r})")
        keys = {"modes", "backend", "float_dtype", "kernel", "report"}
        unknown = sorted(set(data) - keys - {"format"})
        if unknown or not isinstance(data.get("modes"), list):
            raise CheckpointError(f"{where}: unexpected plan keys {unknown} or no modes list")
        return cls(**{k: v for k, v in data.items() if k in keys})

    def save(self, directory: Path) -> None:
        (directory / PLAN_FILE).write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> Plan:
        path = directory / PLAN_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise CheckpointError(f"{directory}: no {PLAN_FILE}; not a quantized folder") from None
        except ValueError as error:
            raise CheckpointError(f"{path}: not valid JSON: {error}") from None
        return cls.from_json(data, str(path))


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The encoder's stored blocks; a clear error for models without a transformer stack."""
    layers = getattr(getattr(model, "encoder", None), "layers", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise ConfigError("SAMP needs a transformer encoder (model.encoder.layers)")
    return layers


def layer_gemms(block: nn.Module) -> dict[str, str]:
    """Name (inside the block) → ``attention`` or ``ffn`` for every float Linear of a block."""
    kinds = {}
    for name, module in block.named_modules():
        if isinstance(module, nn.Linear):
            kinds[name] = "ffn" if name.startswith("feed_forward.") else "attention"
    return kinds


def int8_gemms(block: nn.Module, mode: str) -> list[str]:
    """The GEMMs of ``block`` that ``mode`` puts in INT8."""
    if mode == "float":
        return []
    return [n for n, kind in layer_gemms(block).items() if mode == "full" or kind == "ffn"]


def check_plan_fits(plan: Plan, model: nn.Module) -> None:
    layers = encoder_layers(model)
    if len(plan.modes) != len(layers):
        raise ConfigError(
            f"plan has {len(plan.modes)} layer modes, the model has {len(layers)} encoder layers"
        )


def parse_modes(text: str, num_layers: int) -> list[str]:
    """``"full"`` (every layer), ``"ffn,ffn,float"`` or the short form ``"QQfF"``."""
    letters = {"F": "float", "f": "ffn", "Q": "full"}
    if text in MODES:
        return [text] * num_layers
    modes = text.split(",") if "," in text else [letters.get(c, c) for c in text]
    if len(modes) != num_layers:
        raise ConfigError(f"plan {text!r}: {len(modes)} modes for {num_layers} layers")
    return modes
