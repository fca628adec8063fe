"""The method registry, the freezing rule and the wrapper the one training loop trains.

A method injects its modules into a built ``Model`` (replacing chosen layers by subclasses that
keep the layers' own parameter names) and names the tensors it trains; everything else is
frozen except the task head, which always trains. ``PeftModel`` is the ``TrainableModel``:
it trains and saves only those tensors (``pretrainkit.peft.folder``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pretrainkit.config.typed import from_dict
from pretrainkit.errors import ConfigError
from pretrainkit.model import Model, ModelOutput
from pretrainkit.peft.options import OPTIONS
from pretrainkit.registry import Registry

# The slots a method may change; the targets (the task head) always train as they are.
BODY = ("embedding", "encoder", "tgt_embedding", "decoder")


class PeftMethod:
    """One parameter-efficient method: ``apply`` injects and names what trains, ``merge`` folds
    the injected modules back into plain layers (where that is possible)."""

    name = ""

    def __init__(self, options: Any = None):
        self.options = options

    def apply(self, model: Model) -> list[str]:
        """Inject this method's modules into ``model``; the body parameters that train."""
        raise NotImplementedError

    def merge(self, model: Model) -> None:
        """Turn ``model`` into a plain model computing the same function (nothing to do for
        methods that only choose which existing tensors train)."""

    def record(self) -> dict[str, Any]:
        return asdict(self.options) if self.options is not None else {}


PEFT_METHODS: Registry[type[PeftMethod]] = Registry("peft method")


def build_method(name: str, options: dict[str, Any] | None = None) -> PeftMethod:
    """The method ``name`` with its options checked (unknown names and keys are errors)."""
    cls = PEFT_METHODS.get(name)
    options_class = OPTIONS.get(name)
    given = dict(options or {})
    if options_class is None:
        if given:
            raise ConfigError(f"peft method {name!r} has no options, got {', '.join(given)}")
        return cls(None)
    return cls(from_dict(options_class, given, f"{name} options"))


def body_modules(model: Model) -> Iterator[tuple[str, nn.Module]]:
    """Every (qualified name, module) of the body slots, each module once."""
    for slot in BODY:
        module = getattr(model, slot, None)
        if module is not None:
            yield from module.named_modules(prefix=slot)


def replace_module(model: Model, name: str, new: nn.Module) -> None:
    parent_name, _, attribute = name.rpartition(".")
    setattr(model.get_submodule(parent_name), attribute, new)


def head_parameters(model: Model) -> list[str]:
    """The task head's parameters, except a table tied to the word embedding (the body's)."""
    aliases = set(model.tied_parameters())
    return [
        f"targets.{name}"
        for name, _ in model.targets.named_parameters()
        if f"targets.{name}" not in aliases
    ]


def freeze_except(model: Model, names: list[str]) -> list[str]:
    """Only ``names`` (and the task head) require gradients; the sorted trainable names."""
    chosen = set(names) | set(head_parameters(model))
    parameters = dict(model.named_parameters())
    missing = sorted(chosen - set(parameters))
    if missing:  # a method named a tensor that is not there: a bug in the method, said plainly
        raise ConfigError(f"peft: no such parameters {missing}")
    for name, parameter in parameters.items():
        parameter.requires_grad_(name in chosen)
    return sorted(chosen)


@dataclass
class BaseReference:
    """The base model folder a PEFT folder builds on, and the sha256 of its weights."""

    path: str
    sha256: str


class PeftModel(nn.Module):
    """A task model with a parameter-efficient method applied, as the loop trains it.

    Args:
        model: the task model (body + head), with ``method`` already applied.
        method: the applied method (its name and options are saved in ``peft.json``).
        trainable: the names of the tensors that train and are saved.
        base: the base model folder the body comes from (saved by path and hash).
    """

    def __init__(self, model: Model, method: PeftMethod, trainable: list[str], base: BaseReference):
        super().__init__()
        self.model = model
        self.method = method
        self.trainable = list(trainable)
        self.base = base

    def forward(self, **batch: Any) -> ModelOutput:
        return self.model(**batch)

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        return (p for p in self.model.parameters() if p.requires_grad)

    def save(
        self,
        directory: str | os.PathLike,
        state_dict: dict[str, torch.Tensor] | None = None,
        overwrite: bool = False,
    ) -> Path:
        """A PEFT folder: the trained tensors, ``peft.json`` and what ``load`` needs besides
        the base (the task model's config, its task record)."""
        from pretrainkit.peft.folder import save_peft

        state = None
        if state_dict is not None:  # gathered from shards: the keys carry this module's prefix
            state = {k.removeprefix("model."): v for k, v in state_dict.items()}
        return save_peft(self, directory, state, overwrite)

    def load_weights(self, directory: str | os.PathLike) -> None:
        """The trained tensors ``save`` wrote, strictly."""
        from pretrainkit.peft.folder import load_trained

        load_trained(self.model, self.trainable, Path(directory))


def apply_peft(
    model: Model, method: str, options: dict[str, Any] | None, base: BaseReference
) -> PeftModel:
    """Apply ``method`` to the task ``model`` in place and wrap it for training."""
    chosen = build_method(method, options)
    trainable = freeze_except(model, chosen.apply(model))
    return PeftModel(model, chosen, trainable, base)


def inner_model(model: nn.Module) -> nn.Module:
    """The task model inside a ``PeftModel`` (for code that needs the Model itself: its
    tokenizer, its heads); any other module as it is."""
    return model.model if isinstance(model, PeftModel) else model


# The methods register themselves on import (each one file, like the other registries).
from pretrainkit.peft import adapter, bitfit, layernorm, lora  # noqa: E402, F401
