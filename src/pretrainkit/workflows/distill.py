"""The ``distill`` command: a teacher, a student made from a folder or a preset, a recipe
(``pretrainkit.distill.recipes``), and the one training loop.

The run folder is a training run like any other (checkpoints, metrics, ``model/``); its model
folder is the student alone, which ``evaluate``, ``predict``, ``embed``, ``convert`` and
``bench`` take as they take any model.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from pretrainkit.config.typed import from_dict
from pretrainkit.distributed import (
    ParallelConfig,
    batch_plan,
    check_run,
    is_main_process,
    rank,
    world_size,
)
from pretrainkit.errors import ConfigError
from pretrainkit.model import Model
from pretrainkit.workflows.run_folder import run_folder

log = logging.getLogger(__name__)


def student_source(student: str | Path | Model, teacher: Model) -> Model:
    """The ``--student`` model: a folder (or run folder) as saved, or a preset / YAML config
    built fresh (seeded by the caller) with the teacher's tokenizer."""
    from pretrainkit.config import load_model_config
    from pretrainkit.folders import load
    from pretrainkit.model import build_model

    if isinstance(student, Model):
        return student
    if Path(student).is_dir():
        return load(student)
    config = load_model_config(str(student))
    tokenizer = teacher.tokenizer
    if tokenizer is not None and config.vocab_size != tokenizer.vocab_size:
        config = load_model_config(config, {"vocab_size": tokenizer.vocab_size})
    net = build_model(config)
    net.tokenizer = tokenizer
    return net


def distill(
    teacher: str | Path | Model,
    student: str | Path | Model,
    recipe: str,
    data: list[str],
    out: str | Path,
    train: Any,
    dev: str | None = None,
    batch_size: int | None = None,
    student_options: dict[str, Any] | None = None,
    recipe_options: dict[str, Any] | None = None,
    strategy: str | ParallelConfig = "single",
    resume: bool = False,
    global_batch_size: int | None = None,
    overwrite: bool = False,
    columns: tuple[str, ...] | None = None,
    eval_batches: int = 20,
    peft: str | None = None,
    peft_options: dict[str, Any] | None = None,
) -> dict:
    """Distil ``teacher`` (a model folder) into a student made from ``student``.

    Args:
        student: a model folder, or a preset name / YAML config (initialised at random with the
            teacher's tokenizer); ``student_options`` (``StudentOptions``) cut it down.
        recipe: a name in ``RECIPES`` with its ``recipe_options``.
        data: the recipe's training input (a task file, a shard folder, parallel files).
        train: a ``TrainConfig`` (steps, lr, precision, ...).
        dev: the recipe's held-out input, scored every ``eval_every`` steps and at the end.
        peft: train only a parameter-efficient method's tensors of the student (and its head;
            ``peft_options`` the method's options). The student as made, before training, is
            written to ``RUN/student-base`` and the run's model is a PEFT folder on it.
    """
    from pretrainkit.distill.options import StudentOptions
    from pretrainkit.distill.recipes import Context, build_recipe
    from pretrainkit.distill.recipes import recipe_options as options_of
    from pretrainkit.distill.students import make_student
    from pretrainkit.folders import load
    from pretrainkit.training import Trainer

    # Everything that can be checked before a model is loaded or a file written.
    chosen = build_recipe(recipe, recipe_options)
    made = from_dict(StudentOptions, dict(student_options or {}), "student options")
    parallel, batch_size = check_run(strategy, train, batch_size, global_batch_size)
    if parallel.strategy == "fsdp":
        raise ConfigError(
            "distill: strategy fsdp is not supported (its sharded checkpoints would hold the "
            "frozen teacher); use ddp or deepspeed"
        )
    if peft is not None:
        from pretrainkit.peft.core import build_method

        build_method(peft, peft_options)  # the method's options, checked before any work
    teacher_model = teacher if isinstance(teacher, Model) else load(teacher)
    torch.manual_seed(train.seed)
    net = make_student(student_source(student, teacher_model), made)
    context = Context(
        data=[str(d) for d in data],
        dev=dev,
        batch_size=batch_size,
        seed=train.seed,
        rank=rank(),
        world_size=world_size(),
        columns=columns,
        eval_batches=eval_batches,
    )
    plan = chosen.plan(teacher_model, net, context)
    student_net = plan.model.student
    student_parameters = sum(p.numel() for p in student_net.parameters())
    run = {
        "command": "distill",
        "recipe": recipe,
        "recipe_options": options_of(chosen),
        "student_options": {k: v for k, v in vars(made).items()},
        "teacher": str(teacher),
        "student": str(student),
        "data": context.data,
        "dev": dev,
        "teacher_parameters": sum(p.numel() for p in teacher_model.parameters()),
        "student_parameters": student_parameters,
        "steps": train.steps,
        **plan.record,
        **batch_plan(parallel, batch_size, train.accumulate),
    }
    log.info(
        "student %d parameters (%.1f%% of the teacher's)",
        run["student_parameters"],
        100 * run["student_parameters"] / run["teacher_parameters"],
    )
    with run_folder(out, resume, overwrite) as folder:
        if peft is not None:
            run["peft"] = _apply_peft(plan.model, folder, peft, peft_options)
        run["trained_parameters"] = sum(p.numel() for p in plan.model.trainable_parameters())
        if is_main_process():
            (folder / "run.json").write_text(json.dumps(run, indent=2) + "\n")
        trainer = Trainer(
            plan.model,
            plan.batches,
            train,
            folder,
            evaluate=plan.evaluate,
            resume=resume,
            strategy=parallel,
        )
        return {**trainer.fit(), "student_parameters": run["student_parameters"]}


STUDENT_BASE = "student-base"


def _apply_peft(
    distiller: Any, folder: Path, method: str, options: dict[str, Any] | None
) -> dict[str, Any]:
    """Save the untrained student as the PEFT base (``RUN/student-base``; a resumed run finds
    it there and must have made the same student), then apply ``method`` to it in place."""
    from pretrainkit.distributed import barrier
    from pretrainkit.errors import CheckpointError
    from pretrainkit.peft.core import apply_peft
    from pretrainkit.peft.folder import base_reference, weights_sha256

    student = distiller.student
    base = folder / STUDENT_BASE
    if is_main_process():
        if base.is_dir():
            made = folder / f".{STUDENT_BASE}-check"
            student.save(made, overwrite=True)
            same = weights_sha256(made) == weights_sha256(base)
            import shutil

            shutil.rmtree(made, ignore_errors=True)
            if not same:
                raise CheckpointError(
                    f"{base}: the student made now differs from the one this run started from "
                    "(other --student options or a changed --student folder)"
                )
        else:
            student.save(base)
    barrier()
    peft = apply_peft(student, method, options, base_reference(base))
    distiller.use_peft(peft)
    return {"method": method, "options": peft.method.record(), "base": str(base)}
