"""The distillation losses: small named components a recipe combines with weights.

Each component is an ``nn.Module`` (some learn a projection) called as
``loss(student, teacher, batch)`` with the two models' ``States`` of the same input; it says
what it needs (``needs``) so the models compute nothing more. Layer indexes: 0 is the
embedding output, ``i`` the output of layer ``i``; a layer map pairs a student index with a
teacher index (TinyBERT's "student layer i ← teacher layer 2i" is ``[(i, 2 * i), ...]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pretrainkit.distill.states import States
from pretrainkit.errors import ConfigError

LayerMap = Sequence[tuple[int, int]]


def uniform_layer_map(student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """Student layer ``i`` ← teacher layer ``round(i * T / S)`` for ``i`` = 1..S (the last
    layers meet; with T = 2S this is ``i ← 2i``)."""
    return [(i, round(i * teacher_layers / student_layers)) for i in range(1, student_layers + 1)]


def parse_layer_map(text: str, student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """``auto`` (``uniform_layer_map``) or ``"1:2,2:4,3:6"`` (student:teacher), checked
    against both models' depths (0 = the embedding output)."""
    if text == "auto":
        return uniform_layer_map(student_layers, teacher_layers)
    pairs = []
    for item in text.split(","):
        parts = item.strip().split(":")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ConfigError(
                f"layer_map: expected student:teacher pairs like 1:2,2:4 or auto, got {item!r}"
            )
        pairs.append((int(parts[0]), int(parts[1])))
    check_layer_map(pairs, student_layers, teacher_layers)
    return pairs


def check_layer_map(pairs: LayerMap, student_layers: int, teacher_layers: int) -> None:
    if not pairs:
        raise ConfigError("layer_map: no layer pairs")
    for s, t in pairs:
        if not 0 <= s <= student_layers:
            raise ConfigError(
                f"layer_map: student layer {s} is out of range: the student has layers "
                f"0 (embedding output) to {student_layers}"
            )
        if not 0 <= t <= teacher_layers:
            raise ConfigError(
                f"layer_map: teacher layer {t} is out of range: the teacher has layers "
                f"0 (embedding output) to {teacher_layers}"
            )


def _token_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``values`` ``[b, s]`` over real tokens."""
    if mask is None:
        return values.mean()
    weights = mask.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp(min=1)


class DistillLoss(nn.Module):
    """Base: ``needs`` names what the States must carry (``attentions``, ``targets``)."""

    needs: frozenset[str] = frozenset()

    def forward(self, student: States, teacher: States, batch: dict[str, Any]) -> torch.Tensor:
        raise NotImplementedError


class SoftLabels(DistillLoss):
    """KL(teacher ‖ student) of the heads' softened distributions, times T² (Hinton et al.).

    Sequence-level logits ``[b, classes]`` compare per row; token-level logits ``[b, s, v]``
    per position where ``labels`` is not -100 (the masked positions of MLM), else per real token.
    """

    needs = frozenset({"targets"})

    def __init__(self, temperature: float):
        super().__init__()
        if temperature <= 0:
            raise ConfigError(f"temperature: {temperature} must be positive")
        self.temperature = temperature

    def forward(self, student: States, teacher: States, batch: dict[str, Any]) -> torch.Tensor:
        assert student.output is not None and teacher.output is not None
        s_logits, t_logits = student.output.logits, teacher.output.logits
        if s_logits is None or t_logits is None or s_logits.shape != t_logits.shape:
            raise ConfigError(
                "soft labels need the same head on teacher and student: logits "
                f"{None if t_logits is None else tuple(t_logits.shape)} vs "
                f"{None if s_logits is None else tuple(s_logits.shape)}"
            )
        t = self.temperature
        log_q = F.log_softmax(s_logits.float() / t, dim=-1)
        log_p = F.log_softmax(t_logits.float() / t, dim=-1)
        per_item = (log_p.exp() * (log_p - log_q)).sum(-1) * t * t  # [b] or [b, s]
        if per_item.dim() == 1:
            return per_item.mean()
        labels = batch.get("labels")
        if labels is not None and labels.shape == per_item.shape:
            return _token_mean(per_item, labels != -100)
        return _token_mean(per_item, student.mask)


class HiddenStates(DistillLoss):
    """MSE between mapped layers' outputs over real tokens; a learned linear projection lifts
    the student's width to the teacher's when they differ (TinyBERT's W_h, one for all pairs)."""

    def __init__(self, layer_map: LayerMap, student_size: int, teacher_size: int):
        super().__init__()
        self.layer_map = list(layer_map)
        self.projection = (
            nn.Linear(student_size, teacher_size) if student_size != teacher_size else None
        )

    def forward(self, student: States, teacher: States, batch: dict[str, Any]) -> torch.Tensor:
        total = torch.zeros((), device=student.hidden[0].device)
        for s, t in self.layer_map:
            ours = student.hidden[s].float()
            if self.projection is not None:
                ours = self.projection(ours)
            error = (ours - teacher.hidden[t].float()).pow(2).mean(-1)  # [b, s]
            total = total + _token_mean(error, student.mask)
        return total / len(self.layer_map)


class AttentionMaps(DistillLoss):
    """Mapped layers' attention probabilities: MSE (TinyBERT) or KL(teacher ‖ student)
    (MiniLM), over real query rows. Head counts must match, or ``heads: mean`` compares the
    maps averaged over heads."""

    needs = frozenset({"attentions"})

    def __init__(self, layer_map: LayerMap, kind: str = "kl", heads: str = "each"):
        super().__init__()
        if kind not in ("kl", "mse"):
            raise ConfigError(f"attention loss kind: expected kl or mse, got {kind!r}")
        if heads not in ("each", "mean"):
            raise ConfigError(f"attention heads: expected each or mean, got {heads!r}")
        self.layer_map = [(s, t) for s, t in layer_map if s > 0 and t > 0]
        if not self.layer_map:
            raise ConfigError("attention loss: the layer map pairs no layers (0 has no attention)")
        self.kind, self.heads = kind, heads

    def forward(self, student: States, teacher: States, batch: dict[str, Any]) -> torch.Tensor:
        total = torch.zeros((), device=student.hidden[0].device)
        for s, t in self.layer_map:
            q, p = student.attentions[s - 1], teacher.attentions[t - 1]  # [b, heads, s, s]
            if self.heads == "mean":
                q, p = q.mean(1, keepdim=True), p.mean(1, keepdim=True)
            elif q.shape != p.shape:
                raise ConfigError(
                    f"attention maps of student layer {s} {tuple(q.shape)} and teacher layer {t} "
                    f"{tuple(p.shape)} differ (head counts?); use heads: mean"
                )
            if self.kind == "mse":
                per_row = (q - p).pow(2).sum(-1)  # [b, heads, s]
            else:
                tiny = torch.finfo(q.dtype).tiny  # masked keys: 0 · log 0 counts as 0
                per_row = (p * (p.clamp(min=tiny).log() - q.clamp(min=tiny).log())).sum(-1)
            rows = per_row.mean(1)  # [b, s]
            total = total + _token_mean(rows, student.mask)
        return total / len(self.layer_map)


def _sentence_pair(student: torch.Tensor, teacher: torch.Tensor) -> None:
    if student.shape[-1] != teacher.shape[-1]:
        raise ConfigError(
            f"sentence losses compare vectors in the teacher's space: the student's are "
            f"{student.shape[-1]}-dimensional, the teacher's {teacher.shape[-1]}; give the "
            "student the teacher's hidden size"
        )


class SentenceLoss(nn.Module):
    """Base of the sentence-level losses: ``loss(students, target)`` with the student's
    sentence vectors of every view ``[b, h]`` (the source, its translation) and the teacher's
    vectors of the source sentences ``[b, h]`` (computed, or cached for fixed inputs)."""

    def forward(self, students: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class SentenceMSE(SentenceLoss):
    """MSE between the student's sentence vectors of each view and the teacher's vector of the
    source sentence (Reimers & Gurevych 2020: source and translation both regress it)."""

    def forward(self, students: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        total = torch.zeros((), device=target.device)
        for vectors in students:
            _sentence_pair(vectors, target)
            total = total + (vectors.float() - target.float()).pow(2).mean()
        return total / len(students)


class InfoNCE(SentenceLoss):
    """Cross-entropy of each student vector against every teacher vector of the batch by
    cosine / temperature; the matching row is the positive, the others in-batch negatives."""

    def __init__(self, temperature: float):
        super().__init__()
        if temperature <= 0:
            raise ConfigError(f"temperature: {temperature} must be positive")
        self.temperature = temperature

    def forward(self, students: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        total = torch.zeros((), device=target.device)
        goal = F.normalize(target.float(), dim=-1)
        labels = torch.arange(goal.shape[0], device=goal.device)
        for vectors in students:
            _sentence_pair(vectors, target)
            scores = F.normalize(vectors.float(), dim=-1) @ goal.T / self.temperature  # [b, b]
            total = total + F.cross_entropy(scores, labels)
        return total / len(students)
