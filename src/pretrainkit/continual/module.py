"""The model one task of a continual run trains: chosen backbone groups and the task's head,
pulled toward their values before the task.

``ContinualModel`` implements the training contract (``pretrainkit.training.contract``), so the
one loop trains it; it saves a delta folder (``pretrainkit.continual.deltas``), never the whole
model.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from pretrainkit.continual.deltas import DELTA_WEIGHTS, lowrank_merged, write_delta
from pretrainkit.model import Model, ModelOutput
from pretrainkit.peft.core import freeze_except, head_parameters, replace_module

# A LoRA slot's update is scale · B A with scale 1 (alpha = r): the learning rate of a task file
# sets its size, as for the whole matrices trained beside it.
SLOT_SCALE = 1.0

Slots = dict[str, tuple[str, str, float]]  # matrix name → factor A's name, factor B's, scale


def attach_slots(model: Model, slots: dict[str, int]) -> Slots:
    """Wrap each matrix of ``slots`` (matrix name → rank) in a LoRA update starting at zero;
    returns the map ``write_delta`` and the penalty need."""
    from pretrainkit.peft.lora import LoraLinear

    out: Slots = {}
    for matrix, rank in slots.items():
        owner = matrix.removesuffix(".weight")
        linear = model.get_submodule(owner)
        if not isinstance(linear, nn.Linear):
            raise AssertionError(f"{owner} is not a Linear: not a LoRA slot")
        replace_module(model, owner, LoraLinear(linear, rank, SLOT_SCALE))
        out[matrix] = (f"{owner}.lora_a", f"{owner}.lora_b", SLOT_SCALE)
    return out


def fold_slots(model: Model, slots: Slots) -> None:
    """Put plain Linears back, each slot folded into its matrix exactly as applying the delta
    does (``lowrank_merged``), so the model and the delta chain hash the same."""
    from pretrainkit.peft.lora import LoraLinear

    for matrix, (_, _, scale) in slots.items():
        owner = matrix.removesuffix(".weight")
        slot = model.get_submodule(owner)
        if not isinstance(slot, LoraLinear):
            raise AssertionError(f"{owner} carries no LoRA slot")
        linear = nn.Linear(
            slot.in_features, slot.out_features, bias=slot.bias is not None, device="meta"
        )
        linear.weight = nn.Parameter(
            lowrank_merged(slot.weight.detach(), slot.lora_a.detach(), slot.lora_b.detach(), scale),
            requires_grad=slot.weight.requires_grad,
        )
        if slot.bias is not None:
            linear.bias = cast(nn.Parameter, slot.bias)  # the same parameter, kept
        replace_module(model, owner, linear)


class ContinualModel(nn.Module):
    """A task model of which only ``body`` tensors (and the head) train.

    Args:
        model: the task model (the current backbone with this task's head).
        body: the backbone tensors chosen for this task.
        anchor: their values before the task (the regulariser pulls toward them).
        fisher: per-tensor weights of the pull (EWC: the old tasks' Fisher; None: L2-SP).
        weight: λ of λ/2 · Σ F·(θ − θ_old)²; 0 for no regulariser.
        record: what ``delta.json`` records besides the tensors (task, parent hash, base).
        extra: backbone tensors the task model leaves out (the decoder of a sequence-to-sequence
            base under an encoder task): unchanged, but part of the backbone's hash.
        slots: LoRA slots attached to ``model`` (``attach_slots``); their factors are among
            ``body``, and the pull acts on the change they make, scale · B A.
    """

    def __init__(
        self,
        model: Model,
        body: list[str],
        anchor: dict[str, torch.Tensor],
        fisher: dict[str, torch.Tensor] | None,
        weight: float,
        record: dict[str, Any],
        extra: dict[str, torch.Tensor] | None = None,
        slots: Slots | None = None,
    ):
        super().__init__()
        self.model = model
        trainable = freeze_except(model, body)
        self.body = sorted(body)
        self.head = sorted(set(trainable) - set(body))
        if self.head != sorted(head_parameters(model)):  # a bug here, said plainly
            raise AssertionError("the head tensors do not match the task model's head")
        self.slots = dict(slots or {})
        factors = {name for a, b, _ in self.slots.values() for name in (a, b)}
        self.whole = [k for k in self.body if k not in factors]  # matrices trained whole
        self.anchor = {k: anchor[k].detach().clone() for k in self.whole}
        pulled = self.whole + list(self.slots)
        self.fisher = None if fisher is None else {k: fisher[k].detach() for k in pulled}
        self.weight = float(weight)
        self.record = dict(record)
        self.extra = dict(extra or {})
        self._parameters_by_name = dict(model.named_parameters())

    def penalty(self) -> torch.Tensor:
        """λ/2 · Σ F·(θ − θ_old)² over the trained backbone tensors (F = 1 for L2-SP); for a
        LoRA slot θ − θ_old is its change, scale · B A."""
        total = torch.zeros((), dtype=torch.float32)
        changes = [
            (name, self._parameters_by_name[name].float() - self.anchor[name])
            for name in self.whole
        ]
        for name, (a, b, scale) in self.slots.items():
            factor_a, factor_b = self._parameters_by_name[a], self._parameters_by_name[b]
            changes.append((name, scale * (factor_b.float() @ factor_a.float())))
        for name, diff in changes:
            term = diff * diff
            if self.fisher is not None:
                term = term * self.fisher[name].to(diff.device)
            total = total.to(diff.device) + term.sum()
        return 0.5 * self.weight * total

    def forward(self, **batch: Any) -> ModelOutput:
        out = self.model(**batch)
        if self.weight == 0 or out.loss is None or not self.training:
            return out
        penalty = self.penalty()
        metrics = {**out.metrics, "penalty": penalty.detach()}
        return ModelOutput(
            out.loss + penalty,
            out.logits,
            out.hidden_states,
            metrics,
            out.target_logits,
            out.encoder_hidden_states,
        )

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        return (p for p in self.model.parameters() if p.requires_grad)

    def save(
        self,
        directory: str | os.PathLike,
        state_dict: dict[str, torch.Tensor] | None = None,
        overwrite: bool = False,
    ) -> Path:
        """A delta folder: the trained backbone tensors and the head, with the chain's hashes.
        (Callers write into a fresh or temporary folder: checkpoints and the final model are
        written atomically by the trainer.)"""
        from pretrainkit.fileio import atomic_directory

        state = None
        if state_dict is not None:  # gathered from shards: the keys carry this module's prefix
            state = {k.removeprefix("model."): v for k, v in state_dict.items()}
        directory = Path(directory)
        with atomic_directory(directory, overwrite=overwrite) as tmp:
            write_delta(
                tmp, self.model, self.body, self.head, self.record, state, self.extra, self.slots
            )
        return directory

    def load_weights(self, directory: str | os.PathLike) -> None:
        """The trained tensors ``save`` wrote, strictly (resuming a task's run)."""
        from pretrainkit.peft.folder import load_trained

        load_trained(self.model, self.body + self.head, Path(directory) / DELTA_WEIGHTS)
