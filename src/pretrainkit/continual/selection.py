"""Which parts of the backbone a new task may change: parameter groups, their importance, and
the choice within a budget.

Groups are derived from the five-slot modules, never from a family's names: inside every layer
of the stack (``….layers.N``) each weight matrix is a group (``attention.query``,
``feed_forward.up``, …), all norms together are one group and all other biases another; outside
the layers (embeddings, a final norm) each module is a group. With a LoRA rank r, every weight
matrix of the layer stack is also offered as a LoRA slot (``….lora``): a change ``B A`` of rank
r that costs r·(in + out) parameters instead of in·out; a matrix is trained whole or as a slot,
never both. The delta stores a slot's two factors, so the architecture does not change.

Importance is measured on a few training batches of a task: the Fisher information (mean squared
gradient of the loss) or the mean absolute gradient. A group's score is its mean importance for
the new task divided by its mean importance for the old ones (their accumulated Fisher): a group
that matters to the new task and little to the old ones scores high. The greedy choice takes the
best-scoring groups that still fit in the budget (a knapsack by score per parameter).
``top_layer_groups`` narrows the candidates to the encoder's top layers, where the backward pass
can stop (``--top-layers``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from pretrainkit.errors import ConfigError
from pretrainkit.model import Model
from pretrainkit.peft.core import BODY

_LAYER = re.compile(r"^(.*\.layers\.\d+)\.")
_STACK_LAYER = re.compile(r"^encoder\.layers\.(\d+)\.")


@dataclass
class Group:
    """A set of backbone tensors chosen together."""

    name: str
    tensors: list[str]
    size: int
    lora_rank: int = 0
    """> 0: a LoRA slot of this rank on the group's one matrix (``size`` counts its factors)."""

    @property
    def matrix(self) -> str:
        """What the group changes: a slot and its whole matrix exclude each other."""
        return self.name.removesuffix(".lora") if self.lora_rank else self.name


def body_parameters(model: Model) -> dict[str, nn.Parameter]:
    """The backbone's parameters by name (every slot but the targets), each tensor once."""
    tied = set(model.tied_parameters())
    return {
        name: p
        for name, p in model.named_parameters()
        if name.split(".", 1)[0] in BODY and name not in tied
    }


def parameter_groups(model: Model, lora_rank: int = 0) -> list[Group]:
    """The candidate groups of ``model``'s backbone, in module order; with ``lora_rank`` > 0
    each weight matrix of the layer stack is followed by its LoRA slot."""
    groups: dict[str, list[str]] = {}
    sizes: dict[str, int] = {}
    parameters = body_parameters(model)
    for name, parameter in parameters.items():
        owner_name, _, leaf = name.rpartition(".")
        owner = model.get_submodule(owner_name)
        layer = _LAYER.match(name)
        is_norm = "norm" in type(owner).__name__.lower()
        if layer is not None and is_norm:
            key = f"{layer.group(1)}.norm"
        elif layer is not None and leaf == "bias":
            key = f"{layer.group(1)}.bias"
        else:
            key = owner_name
        groups.setdefault(key, []).append(name)
        sizes[key] = sizes.get(key, 0) + parameter.numel()
    out = []
    for key, tensors in groups.items():
        out.append(Group(key, tensors, sizes[key]))
        matrix = parameters[tensors[0]]
        if lora_rank and len(tensors) == 1 and matrix.dim() == 2 and _LAYER.match(tensors[0]):
            if isinstance(model.get_submodule(key), nn.Linear):
                rows, cols = matrix.shape
                if lora_rank * (rows + cols) < rows * cols:  # a slot cheaper than the matrix
                    out.append(Group(f"{key}.lora", tensors, lora_rank * (rows + cols), lora_rank))
    return out


def backbone_size(groups: list[Group]) -> int:
    """Parameters of the backbone (the whole groups; LoRA slots are alternatives)."""
    return sum(g.size for g in groups if not g.lora_rank)


def backbone_fraction(fraction: float, backbone: int, head: int, budget: str) -> float:
    """The share of the backbone a task's groups may take when ``fraction`` of the whole model
    (``backbone`` + the task's ``head`` parameters) is its budget and the head always trains
    (``--budget-scope model``).

    Raises:
        ConfigError: the head alone fills the budget.
    """
    allowed = fraction * (backbone + head)
    if allowed <= head:
        raise ConfigError(
            f"budget {budget} of the model ({int(allowed):,} parameters with the head) leaves "
            f"nothing for the backbone: the task's head alone has {head:,}; give a larger "
            "--budget or --budget-scope backbone"
        )
    return (allowed - head) / backbone


def importance(
    model: nn.Module,
    parameters: dict[str, nn.Parameter],
    batches: Iterable[dict[str, torch.Tensor]],
    kind: str,
) -> dict[str, torch.Tensor]:
    """Per-parameter importance of ``parameters`` for the loss ``model`` computes on
    ``batches``: the mean squared gradient (``fisher``, the empirical Fisher of each batch's
    mean loss) or the mean absolute gradient (``gradient``). Gradients are restored after."""
    if kind not in ("fisher", "gradient"):
        raise ConfigError(f"unknown importance {kind!r}; valid choices: fisher, gradient")
    flags = {name: p.requires_grad for name, p in parameters.items()}
    was_training = model.training
    model.eval()  # dropout off: the importance of the weights, not of a dropout mask
    totals = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in parameters.items()}
    count = 0
    try:
        for p in parameters.values():
            p.requires_grad_(True)
        for batch in batches:
            model.zero_grad(set_to_none=True)
            loss = model(**batch).loss
            if loss is None:
                raise ConfigError("importance needs batches with labels (the task's training data)")
            loss.backward()
            for name, p in parameters.items():
                if p.grad is not None:
                    g = p.grad.detach().float()
                    totals[name] += g * g if kind == "fisher" else g.abs()
            count += 1
    finally:
        model.zero_grad(set_to_none=True)
        for name, p in parameters.items():
            p.requires_grad_(flags[name])
        model.train(was_training)
    if count == 0:
        raise ConfigError("importance: no batches to measure it on")
    return {name: total / count for name, total in totals.items()}


def normalized(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``values`` scaled to mean 1 over all their elements (scores and λ then do not depend on
    the size of a task's loss); all zeros stay zeros."""
    total = sum(float(v.double().sum()) for v in values.values())
    count = sum(v.numel() for v in values.values())
    scale = count / total if total > 0 else 0.0
    return {name: v * scale for name, v in values.items()}


def group_scores(
    groups: list[Group], new: dict[str, torch.Tensor], old: dict[str, torch.Tensor] | None
) -> dict[str, float]:
    """Mean new importance over mean old importance per group (new alone without old tasks).
    The old mean is floored at 1 % of its average so a group no old task used does not divide
    by zero."""

    def mean(values: dict[str, torch.Tensor], group: Group) -> float:
        return sum(float(values[t].double().sum()) for t in group.tensors) / group.size

    scores = {}
    floor = 0.01  # old importance is normalised to mean 1
    for group in groups:
        score = mean(new, group)
        if old is not None:
            score /= max(mean(old, group), floor)
        scores[group.name] = score
    return scores


def top_layer_groups(model: Model, groups: list[Group], top_layers: int) -> list[Group]:
    """The groups of ``model``'s top ``top_layers`` encoder layers and of its final norm: with
    nothing below them trainable, autograd stops the backward pass at the lowest of them (the
    hidden states reaching it carry no gradient). ``top_layers`` 0: all of ``groups``.

    Raises:
        ConfigError: a model with a decoder (its layers would need their own rule), an encoder
            without a layer stack, or more layers asked for than it has.
    """
    if top_layers == 0:
        return groups
    if model.decoder is not None:
        raise ConfigError(
            f"top_layers {top_layers}: {type(model).__name__} has a decoder; the rule covers "
            "encoder-only backbones; drop --top-layers"
        )
    layers = getattr(model.encoder, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ConfigError(
            f"top_layers {top_layers}: the encoder ({type(model.encoder).__name__}) has no "
            "layer stack; drop --top-layers"
        )
    if top_layers > len(layers):
        raise ConfigError(
            f"top_layers {top_layers} exceeds the encoder's {len(layers)} layer(s); give at "
            f"most {len(layers)}"
        )
    lowest = len(layers) - top_layers

    def above(tensor: str) -> bool:
        layer = _STACK_LAYER.match(tensor)
        if layer is not None:
            return int(layer.group(1)) >= lowest
        return tensor.startswith("encoder.final_norm.")  # after every layer

    return [g for g in groups if all(above(t) for t in g.tensors)]


def choose(
    groups: list[Group],
    fraction: float,
    scores: dict[str, float] | None,
    seed: int = 0,
    total: int | None = None,
) -> list[Group]:
    """The groups to train within ``fraction`` of the backbone's parameters (``total``, by
    default all of ``groups``): the best by score (``scores``), or in a seeded random order
    (``scores`` None), each taken when it still fits.

    Raises:
        ConfigError: the budget is smaller than the smallest group.
    """
    total = backbone_size(groups) if total is None else total
    allowed = fraction * total
    if fraction >= 1.0:
        return [g for g in groups if not g.lora_rank]
    if scores is None:
        order = list(groups)
        random.Random(seed).shuffle(order)
    else:
        # Equal scores (a matrix and its slot): the whole matrix first, where it fits.
        order = sorted(groups, key=lambda g: (-scores[g.name], g.lora_rank, g.name))
    chosen, used, taken = [], 0, set()
    for group in order:
        if group.matrix not in taken and used + group.size <= allowed:
            chosen.append(group)
            used += group.size
            taken.add(group.matrix)
    if not chosen:
        smallest = min(g.size for g in groups)
        raise ConfigError(
            f"budget {fraction:.3%} of {total:,} parameters ({int(allowed):,}) is smaller than "
            f"the smallest parameter group ({smallest:,}); give a larger --budget"
        )
    names = {g.name for g in chosen}
    return [g for g in groups if g.name in names]  # in module order
