"""The teacher–student model the one training loop trains (``TrainableModel``).

The teacher is frozen and stays in eval mode whatever the loop asks; only the student (and any
projection a loss learns) is trained. ``save`` writes the student as a normal model folder, the
learned loss parameters beside it in ``distill.safetensors``; the teacher is never written.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from pretrainkit.distill.losses import DistillLoss, SentenceLoss
from pretrainkit.distill.states import States, check_distillable, run_states, view
from pretrainkit.errors import CheckpointError, ConfigError
from pretrainkit.fileio import read_safetensors
from pretrainkit.model import Model, ModelOutput

# The learned parameters of the losses (projections), beside the student's weights.
LOSS_STATE = "distill.safetensors"


class Distiller(nn.Module):
    """Teacher and student on the same batch; the loss is the weighted sum of the components.

    Args:
        teacher: the model to imitate (frozen here: ``requires_grad`` off, eval mode).
        student: the model trained; its own loss on the batch's labels counts with
            ``hard_weight`` (0: the student's heads run only for soft labels).
        losses: name → (weight, component); token-level components (``DistillLoss``) compare
            the two models' States of the same input, sentence-level ones (``SentenceLoss``)
            the student's sentence vector of every view with the teacher's of the source.
        pooling: how sentence vectors are pooled (the student's ``encode`` pooling).
        normalize: sentence vectors are compared at unit length, as ``encode`` returns them for
            a model that normalises (the teacher's setting, which the student inherits).

    Batch keys: the student reads ``input_ids`` / ``attention_mask`` / ``token_type_ids`` and
    the labels; a second view of the same sentences (a translation) comes as ``translation_*``;
    the teacher reads ``teacher_*`` when its tokenizer differs, else the student's input; a
    ``teacher_sentence`` ``[b, h]`` replaces the teacher's forward pass for sentence losses
    (vectors cached once for fixed inputs).
    """

    def __init__(
        self,
        teacher: Model,
        student: Model,
        losses: dict[str, tuple[float, nn.Module]],
        hard_weight: float = 0.0,
        pooling: str = "mean",
        normalize: bool = False,
    ):
        super().__init__()
        check_distillable(teacher, "teacher")
        check_distillable(student, "student")
        if not losses and hard_weight == 0:
            raise ConfigError("distillation needs at least one loss with a weight above 0")
        for name, (weight, _) in losses.items():
            if weight < 0:
                raise ConfigError(f"loss {name}: weight {weight} must not be negative")
        self.teacher = teacher
        self.student = student
        self.losses = nn.ModuleDict({name: module for name, (_, module) in losses.items()})
        self.weights = {name: float(weight) for name, (weight, _) in losses.items()}
        self.hard_weight = float(hard_weight)
        self.pooling = pooling
        self.normalize = normalize
        teacher.requires_grad_(False)
        teacher.eval()
        token_losses = [m for m in self.losses.values() if isinstance(m, DistillLoss)]
        needs = set().union(*(m.needs for m in token_losses)) if token_losses else set()
        self._attentions = "attentions" in needs
        self._student_heads = "targets" in needs or self.hard_weight > 0
        self._teacher_heads = "targets" in needs
        self._token_level = bool(token_losses)
        self.peft: Any = None  # see use_peft

    def use_peft(self, peft: Any) -> None:
        """Save and load the student through ``peft`` (a ``PeftModel`` around it: only the
        method's tensors and the head train, ``distill --peft``). Kept outside the module tree:
        its parameters are the student's, and must not appear twice in the state dict."""
        object.__setattr__(self, "peft", peft)

    # -- the training contract ---------------------------------------------------------------

    def train(self, mode: bool = True) -> Distiller:
        super().train(mode)
        self.teacher.eval()  # dropout off: the targets the student learns are deterministic
        return self

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        for module in (self.student, self.losses):
            yield from (p for p in module.parameters() if p.requires_grad)

    def forward(self, **batch: Any) -> ModelOutput:
        labels: dict[str, Any] = {k: batch[k] for k in ("labels", "pair_labels") if k in batch}
        student = run_states(
            self.student,
            view(batch),
            attentions=self._attentions,
            targets=labels if self._student_heads else None,
        )
        teacher = self._teacher_states(batch) if self._needs_teacher_states(batch) else None
        metrics: dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=student.hidden[0].device)
        if self.hard_weight > 0:
            assert student.output is not None
            if student.output.loss is None:
                raise ConfigError("hard_weight > 0 but the batch has no labels for the student")
            total = total + self.hard_weight * student.output.loss
            metrics.update(student.output.metrics)
        vectors: list[torch.Tensor] | None = None
        for name, module in self.losses.items():
            if isinstance(module, SentenceLoss):
                if vectors is None:
                    vectors = self._student_sentences(batch, student)
                value = module(vectors, self._teacher_sentence(batch, teacher))
            else:
                assert teacher is not None
                value = module(student, teacher, batch)
            metrics[f"distill_{name}"] = value.detach()
            if self.weights[name] > 0:
                total = total + self.weights[name] * value
        logits = student.output.logits if student.output is not None else None
        return ModelOutput(total, logits, student.hidden[-1], metrics)

    def save(
        self,
        directory: str | os.PathLike,
        state_dict: dict[str, torch.Tensor] | None = None,
        overwrite: bool = False,
    ) -> Path:
        """The student's model folder, plus the losses' learned parameters when there are any."""
        student_state = loss_state = None
        if state_dict is not None:  # gathered from shards: keep the student's and the losses'
            student_state = _under(state_dict, "student.")
            loss_state = _under(state_dict, "losses.")
        saver = self.student if self.peft is None else self.peft
        path = saver.save(directory, student_state, overwrite)
        loss_state = loss_state if loss_state is not None else self.losses.state_dict()
        if loss_state:
            tensors = {k: v.detach().contiguous().cpu() for k, v in loss_state.items()}
            save_file(tensors, str(path / LOSS_STATE), metadata={"format": "pretrainkit"})
        return path

    def load_weights(self, directory: str | os.PathLike) -> None:
        """The student's weights and the losses' parameters, strictly."""
        (self.student if self.peft is None else self.peft).load_weights(directory)
        expected = self.losses.state_dict()
        if not expected:
            return
        path = Path(directory) / LOSS_STATE
        if not path.is_file():
            raise CheckpointError(f"{path}: missing; the distillation losses have parameters")
        state = read_safetensors(path)
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        if missing or unexpected:
            raise CheckpointError(f"{path}: missing {missing}, unexpected {unexpected}")
        self.losses.load_state_dict(state)

    # -- the two sides ---------------------------------------------------------------------

    def _needs_teacher_states(self, batch: dict[str, Any]) -> bool:
        if self._token_level:
            return True
        if not self.losses:  # the student's own loss alone (a no-teacher baseline)
            return False
        return "teacher_sentence" not in batch  # sentence losses without a cached vector

    @torch.no_grad()
    def _teacher_states(self, batch: dict[str, Any]) -> States:
        inputs = view(batch, "teacher_") or view(batch)
        if self._token_level and "teacher_input_ids" in batch:
            raise ConfigError(
                "token-level losses compare the two models position by position: teacher and "
                "student need the same tokenizer (the batch has separate teacher_input_ids)"
            )
        labels: dict[str, Any] = {k: batch[k] for k in ("labels", "pair_labels") if k in batch}
        return run_states(
            self.teacher,
            inputs,
            attentions=self._attentions,
            targets=labels if self._teacher_heads else None,
        )

    def _teacher_sentence(self, batch: dict[str, Any], teacher: States | None) -> torch.Tensor:
        if "teacher_sentence" in batch:
            return batch["teacher_sentence"]
        assert teacher is not None
        pooling = self.teacher.encode_defaults.get("pooling", self.pooling)
        vectors = teacher.sentence(pooling)
        return self._unit(vectors) if self.teacher.encode_defaults.get("normalize") else vectors

    def _unit(self, vectors: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(vectors.float(), dim=-1)

    def _student_sentences(self, batch: dict[str, Any], source: States) -> list[torch.Tensor]:
        """The student's sentence vector of the source and of every other view (translation)."""
        vectors = [source.sentence(self.pooling)]
        if "translation_input_ids" in batch:
            other = run_states(self.student, view(batch, "translation_"))
            vectors.append(other.sentence(self.pooling))
        return [self._unit(v) for v in vectors] if self.normalize else vectors


def _under(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
