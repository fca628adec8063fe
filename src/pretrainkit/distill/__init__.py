"""Distillation in the one training loop: a teacher–student model (``Distiller``), named loss
components (``losses``), student initialisation (``students``) and recipes (``recipes.RECIPES``)
that ``pretrainkit distill`` runs. See docs/ARCHITECTURE.md and METHODS.md §4, §6.

Names are imported on first use: the command line's parser reads ``distill.options`` without
loading torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pretrainkit.lazy import lazy_exports

_EXPORTS = {
    "Distiller": "pretrainkit.distill.module",
    "LOSS_STATE": "pretrainkit.distill.module",
    "StudentOptions": "pretrainkit.distill.options",
    "RECIPE_OPTIONS": "pretrainkit.distill.options",
    "make_student": "pretrainkit.distill.students",
}

if TYPE_CHECKING:
    from pretrainkit.distill.module import LOSS_STATE, Distiller
    from pretrainkit.distill.options import RECIPE_OPTIONS, StudentOptions
    from pretrainkit.distill.students import make_student

__all__ = ["LOSS_STATE", "RECIPE_OPTIONS", "Distiller", "StudentOptions", "make_student"]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
