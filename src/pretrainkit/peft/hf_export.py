"""LoRA in the format of the HF ``peft`` library, on the base exported by ``convert --to-hf``.

``export_hf(PEFT_DIR, OUT)`` writes ``OUT/base/`` (the base model folder as
``convert --to-hf`` writes it) and, at ``OUT``'s top, ``adapter_config.json`` +
``adapter_model.safetensors`` with peft's key names for that base
(``base_model.model.<HF module>.lora_A.weight``), so that
``PeftModel.from_pretrained(AutoModel...from_pretrained(OUT / "base"), OUT)`` computes what
the PEFT folder computes. The task head is not part of a peft LoRA adapter and is left out
(said in the log): ``merge`` then ``convert --to-hf`` gives the whole fine-tuned model.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from safetensors.torch import save_file

from pretrainkit.errors import CheckpointError
from pretrainkit.fileio import atomic_directory
from pretrainkit.peft.folder import load_peft
from pretrainkit.peft.lora import lora_layers

log = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
BASE = "base"


def hf_module_names(base_dir: str, names: list[str]) -> dict[str, str]:
    """Our module name → the HF module name in the architecture ``convert --to-hf`` writes for
    the base (``encoder.layers.0.attention.query`` → ``bert.encoder.layer.0.attention.self.query``
    for ``BertForMaskedLM``); a CheckpointError when one is not a plain HF Linear."""
    # The converter's own key map (hf.py's, not a copy of it): the same names it exports.
    from pretrainkit.convert.hf import _family_of, _pairs
    from pretrainkit.convert.spec import IDENTITY
    from pretrainkit.folders import load

    base = load(base_dir)
    family = _family_of(base.config, None)
    head = family.head_for_targets(tuple(t.name for t in base.config.targets))
    pairs = _pairs(family, head, base)
    by_ours = {ours: (hf, transform) for ours, hf, transform in pairs}
    per_hf: dict[str, int] = {}
    for _, hf, _ in pairs:
        per_hf[hf] = per_hf.get(hf, 0) + 1
    out = {}
    for name in names:
        found = by_ours.get(f"{name}.weight")
        if found is None:
            raise CheckpointError(f"{name}: the HF {family.model_type} key map does not name it")
        hf, transform = found
        if transform != IDENTITY or per_hf[hf] != 1 or not hf.endswith(".weight"):
            raise CheckpointError(
                f"{name}: not one plain Linear in the HF {family.model_type} model "
                f"({head.architecture}); its LoRA cannot be written in the peft format"
            )
        out[name] = hf.removesuffix(".weight")
    return out


def export_hf(
    directory: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False
) -> Path:
    """Write the LoRA PEFT folder ``directory`` as HF base + peft adapter in ``out``."""
    from pretrainkit.convert import convert_to_hf

    peft = load_peft(directory)
    if peft.method.name != "lora":
        raise CheckpointError(
            f"{directory}: a {peft.method.name} PEFT folder; only LoRA has a HF peft format here "
            "(merge it with `pretrainkit merge`, then convert the plain folder)"
        )
    layers = lora_layers(peft.model)
    names = hf_module_names(peft.base.path, sorted(layers))
    tensors = {}
    for name, layer in layers.items():
        key = f"base_model.model.{names[name]}"
        tensors[f"{key}.lora_A.weight"] = layer.lora_a.detach().contiguous().cpu()
        tensors[f"{key}.lora_B.weight"] = layer.lora_b.detach().contiguous().cpu()
    options = peft.method.options
    out = Path(out)
    config = {
        "peft_type": "LORA",
        "task_type": None,
        "r": options.lora_rank,
        "lora_alpha": options.lora_alpha,
        "lora_dropout": options.lora_dropout,
        "target_modules": sorted(names.values()),  # full names: exactly these modules
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
        "base_model_name_or_path": str((out / BASE).resolve()),
    }
    heads = sorted(peft.model.targets)
    if heads:
        log.warning(
            "the task head (%s) is not part of a peft LoRA adapter and is not exported; "
            "`pretrainkit merge` then `convert --to-hf` writes the whole fine-tuned model",
            ", ".join(heads),
        )
    with atomic_directory(out, overwrite=overwrite) as tmp:
        convert_to_hf(peft.base.path, tmp / BASE)
        (tmp / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        save_file(tensors, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    return out
