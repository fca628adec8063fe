"""Options of continual learning and the task files it reads, free of torch for the command line.

A continual run trains one backbone on a sequence of tasks. Each task is a YAML file (a
``finetune`` spec: the task, its files, its steps and training options); ``ContinualOptions``
says how much of the backbone each task may change and what keeps the old tasks working.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pretrainkit.errors import ConfigError, closest

SELECTIONS = ("importance", "random")
IMPORTANCES = ("fisher", "gradient")
REGULARIZERS = ("ewc", "l2sp", "none")
BUDGET_SCOPES = ("backbone", "model")


def parse_budget(text: str | float) -> float:
    """``"5%"`` → 0.05; a plain number is a fraction in (0, 1]. Zero and more than 100 % are
    errors (a budget of nothing trains only the heads: use a frozen backbone for that)."""
    where = f"budget {text!r}"
    if isinstance(text, bool):
        raise ConfigError(f"{where}: expected a percentage such as 5% or a fraction such as 0.05")
    if isinstance(text, int | float):
        value = float(text)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(%?)\s*", str(text))
        if match is None:
            raise ConfigError(
                f"{where}: expected a percentage such as 5% or a fraction such as 0.05"
            )
        value = float(match.group(1)) / (100.0 if match.group(2) else 1.0)
        if not match.group(2) and value > 1.0:
            raise ConfigError(f"{where}: a plain number is a fraction of at most 1; write {text}%")
    if not 0.0 < value <= 1.0:
        raise ConfigError(f"{where}: the share of the backbone must be above 0 and at most 100%")
    return value


@dataclass
class ContinualOptions:
    """How each task of the sequence trains the shared backbone."""

    budget: str = "5%"
    """Share of the backbone's parameters each task may change (its parameter groups are
    chosen to fit), e.g. 5% or 0.05; 100% is full fine-tuning."""

    budget_scope: str = "backbone"
    """What the budget is a share of: backbone (the shared encoder; each task's head trains on
    top of it) or model (backbone plus the task's head, which always trains: the groups get
    what the head leaves, so everything the task trains, and its delta, stays within the
    budget)."""

    selection: str = "importance"
    """How the groups are chosen: importance (high on the new task, low on the old ones) or
    random (the baseline at the same budget)."""

    importance: str = "fisher"
    """Importance of a parameter: fisher (mean squared gradient of the loss) or gradient
    (mean absolute gradient)."""

    importance_batches: int = 8
    """Training batches of a task used to measure importance (selection, and the Fisher the
    regulariser keeps after each task)."""

    regularizer: str = "ewc"
    """Pull the trained groups toward their values before the task: ewc (weighted by the old
    tasks' Fisher information), l2sp (unweighted) or none."""

    reg_weight: float = 1.0
    """Weight λ of the regulariser, λ/2 · Σ F·(θ − θ_old)² (each task's Fisher scaled to mean 1
    over the backbone, so λ does not depend on the size of the loss)."""

    seed: int = 42
    """Seed of the random selection and of the importance batches."""

    lora_rank: int = 0
    """Also offer every weight matrix of the layer stack as a LoRA slot of this rank: a
    low-rank change B·A (r·(in + out) parameters instead of in·out), chosen like any group and
    stored in the delta as its two factors; 0 offers whole matrices only."""

    top_layers: int = 0
    """Choose only among the groups of the encoder's top K layers (and its final norm); the
    backward pass then stops below them, so a step costs about (N + K) / 3N of a full one for
    N layers (the backward about twice the forward) instead of about 3/4 when a group of the
    lowest layer is chosen. 0: every group of the backbone is a candidate. The budget stays a
    share of the whole backbone."""

    def __post_init__(self) -> None:
        self.fraction = parse_budget(self.budget)
        for name, value, choices in (
            ("selection", self.selection, SELECTIONS),
            ("importance", self.importance, IMPORTANCES),
            ("regularizer", self.regularizer, REGULARIZERS),
            ("budget_scope", self.budget_scope, BUDGET_SCOPES),
        ):
            if value not in choices:
                hint = closest(str(value), choices)
                raise ConfigError(
                    f"unknown {name} {value!r}{hint}; valid choices: {', '.join(choices)}"
                )
        if not isinstance(self.importance_batches, int) or self.importance_batches < 1:
            raise ConfigError(
                f"importance_batches must be an integer of at least 1, got "
                f"{self.importance_batches!r}"
            )
        if isinstance(self.lora_rank, bool) or not isinstance(self.lora_rank, int):
            raise ConfigError(f"lora_rank must be an integer ≥ 0, got {self.lora_rank!r}")
        if self.lora_rank < 0:
            raise ConfigError(f"lora_rank must be ≥ 0 (0: no LoRA slots), got {self.lora_rank}")
        if self.lora_rank and self.fraction >= 1.0:
            raise ConfigError(
                f"lora_rank {self.lora_rank} with budget {self.budget}: a budget of 100% trains "
                "every matrix whole, so no LoRA slot would be chosen; give a smaller --budget or "
                "lora_rank 0"
            )
        if isinstance(self.top_layers, bool) or not isinstance(self.top_layers, int):
            raise ConfigError(f"top_layers must be an integer ≥ 0, got {self.top_layers!r}")
        if self.top_layers < 0:
            raise ConfigError(f"top_layers must be ≥ 0 (0: every layer), got {self.top_layers}")
        if not isinstance(self.reg_weight, int | float) or not self.reg_weight >= 0:
            raise ConfigError(f"reg_weight must be a number ≥ 0, got {self.reg_weight!r}")
        if self.regularizer != "none" and self.reg_weight == 0:
            raise ConfigError(
                f"regularizer {self.regularizer!r} with reg_weight 0 does nothing; give a "
                "positive weight or --regularizer none"
            )


# Keys of a task file besides the training options (TrainConfig's fields, checked at run time).
SPEC_KEYS = ("name", "task", "train", "dev", "columns", "epochs", "steps", "batch_size", "options")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass
class TaskSpec:
    """One task of the sequence, as its YAML file gives it (paths relative to that file)."""

    path: Path
    name: str
    task: str
    train: Path
    dev: Path
    columns: tuple[str, ...] | None = None
    epochs: float | None = None
    steps: int | None = None
    batch_size: int = 32
    options: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)


def read_task_spec(path: str | os.PathLike, train_fields: list[str]) -> TaskSpec:
    """The task file ``path``; a ConfigError naming the file and the key for anything wrong.

    ``train_fields``: the training options a file may set besides ``SPEC_KEYS`` (TrainConfig's).
    """
    from pretrainkit.config.typed import read_yaml_file

    path = Path(path)
    data = read_yaml_file(path)
    where = str(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of keys (task, train, dev, ...)")
    allowed = [*SPEC_KEYS, *(f for f in train_fields if f != "steps")]
    for key in data:
        if key not in allowed:
            raise ConfigError(
                f"{where}: unknown key {key!r}{closest(str(key), allowed)}; valid keys: "
                f"{', '.join(allowed)}"
            )
    for key in ("task", "train", "dev"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise ConfigError(
                f"{where}: {key!r} is required (a {'name' if key == 'task' else 'path'})"
            )
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ConfigError(
            f"{where}: name {name!r} must be letters, digits, '_', '.' or '-' (it names a folder)"
        )
    if ("epochs" in data) == ("steps" in data):
        raise ConfigError(f"{where}: give 'steps' or 'epochs' (one of them)")
    steps, epochs = data.get("steps"), data.get("epochs")
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
        raise ConfigError(f"{where}: steps must be a positive integer, got {steps!r}")
    if epochs is not None and (
        isinstance(epochs, bool) or not isinstance(epochs, int | float) or not epochs > 0
    ):
        raise ConfigError(f"{where}: epochs must be a positive number, got {epochs!r}")
    batch = data.get("batch_size", 32)
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ConfigError(f"{where}: batch_size must be a positive integer, got {batch!r}")
    columns = data.get("columns")
    if columns is not None and not (
        isinstance(columns, list) and columns and all(isinstance(c, str) for c in columns)
    ):
        raise ConfigError(f"{where}: columns must be a list of column names")
    options = data.get("options") or {}
    if not isinstance(options, dict):
        raise ConfigError(f"{where}: options must be a mapping of the task's options")
    here = path.parent

    def resolve(value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else here / p

    return TaskSpec(
        path=path,
        name=name,
        task=data["task"],
        train=resolve(data["train"]),
        dev=resolve(data["dev"]),
        columns=tuple(columns) if columns else None,
        epochs=float(epochs) if epochs is not None else None,
        steps=steps,
        batch_size=batch,
        options=dict(options),
        training={k: v for k, v in data.items() if k not in SPEC_KEYS},
    )
