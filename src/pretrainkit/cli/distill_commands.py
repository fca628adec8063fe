"""The ``distill`` command: teacher → student through a recipe, with every training option of
``pretrain`` / ``finetune`` (precision, strategy, resume, ...)."""

from __future__ import annotations

import argparse
from typing import Any

from pretrainkit.cli.commands import (
    _parallel_config,
    _train_config,
    _train_options,
    add_columns,
    command,
)
from pretrainkit.cli.options import add_dataclass_options, add_union_options, given_union_options

RECIPE_PREFIX = "recipe__"


def _add_distill(p: argparse.ArgumentParser) -> None:
    from pretrainkit.distill.options import RECIPE_OPTIONS, StudentOptions

    p.add_argument("--teacher", required=True, help="the teacher's model folder (or run folder)")
    p.add_argument(
        "--student",
        required=True,
        help="a model folder to cut the student from (often the teacher's), or a preset name "
        "/ YAML config initialised at random with the teacher's tokenizer",
    )
    p.add_argument(
        "--recipe",
        required=True,
        choices=sorted(RECIPE_OPTIONS),
        help="task: a fine-tuned teacher's task file (soft labels, hidden states); layerwise: "
        "pre-training shards (hidden states, attention); sentence: parallel source<TAB>"
        "translation files (sentence-vector MSE / InfoNCE)",
    )
    p.add_argument(
        "--data",
        nargs="+",
        required=True,
        help="the recipe's training input: a task file (task), a shard folder (layerwise), "
        "parallel files (sentence)",
    )
    p.add_argument(
        "--dev",
        help="held-out input scored during training: a task file (task), shards (layerwise), "
        "an STS file of scored pairs (sentence)",
    )
    p.add_argument("--out", required=True, help="run folder; its model/ is the student")
    p.add_argument("--eval-batches", type=int, default=20, help="batches of --dev (layerwise)")
    add_columns(p)
    add_dataclass_options(p, StudentOptions, title="student (how it is made from --student)")
    add_union_options(p, RECIPE_OPTIONS, RECIPE_PREFIX, "recipe options (--recipe NAME)")
    from pretrainkit.cli.peft_commands import add_peft_options

    add_peft_options(p)
    _train_options(p)


@command("distill", "distil a teacher into a smaller student (task, layer-wise, sentence)")(
    _add_distill
)
def distill(args: argparse.Namespace) -> dict[str, Any]:
    from pretrainkit.cli.options import dataclass_from_args
    from pretrainkit.cli.peft_commands import peft_choice
    from pretrainkit.distill.options import RECIPE_OPTIONS, StudentOptions
    from pretrainkit.workflows.distill import distill as run

    recipe_options = given_union_options(
        args, RECIPE_PREFIX, RECIPE_OPTIONS[args.recipe], f"recipe {args.recipe}"
    )
    student = dataclass_from_args(StudentOptions, args)
    peft, peft_options = peft_choice(args)
    return run(
        args.teacher,
        args.student,
        args.recipe,
        args.data,
        args.out,
        _train_config(args),
        dev=args.dev,
        batch_size=args.batch_size,
        student_options=vars(student),
        recipe_options=recipe_options,
        strategy=_parallel_config(args),
        resume=args.resume,
        global_batch_size=args.global_batch_size,
        overwrite=args.overwrite,
        columns=args.columns,
        eval_batches=args.eval_batches,
        peft=peft,
        peft_options=peft_options,
    )
