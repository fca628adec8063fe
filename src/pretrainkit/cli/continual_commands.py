"""Continual learning on the command line: ``continual`` trains one backbone on a sequence of
task files; ``continual-export`` writes one task's model from the run's deltas."""

from __future__ import annotations

import argparse

from pretrainkit.cli.commands import add_overwrite, command
from pretrainkit.cli.options import add_dataclass_options, dataclass_from_args

TASK_FILE_HELP = (
    "task files in training order, each a YAML finetune spec: task (a registered task), train, "
    "dev (paths relative to the file), steps or epochs, and optionally name, columns, "
    "batch_size, options (the task's), and any training option (lr, warmup, precision, ...)"
)


def _add_continual(p: argparse.ArgumentParser) -> None:
    from pretrainkit.continual.options import ContinualOptions

    p.add_argument("--model", required=True, help="base model folder (recorded by path and hash)")
    p.add_argument("--tasks", nargs="+", required=True, help=TASK_FILE_HELP)
    p.add_argument("--out", required=True, help="run folder (continual.json, one delta per task)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out: finished tasks are re-applied from their deltas, the "
        "unfinished one continues from its last checkpoint",
    )
    add_dataclass_options(p, ContinualOptions, title="continual learning")
    add_overwrite(p, "--out (a continual run)")


@command("continual", "train one backbone on a sequence of tasks, a budget of parameters each")(
    _add_continual
)
def continual(args):
    from pretrainkit.continual.options import ContinualOptions
    from pretrainkit.workflows.continual import continual as run

    return run(
        args.model,
        args.tasks,
        args.out,
        dataclass_from_args(ContinualOptions, args),
        resume=args.resume,
        overwrite=args.overwrite,
    )


def _add_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="a continual run folder")
    p.add_argument("--task", required=True, help="the task's name (its file's 'name' or stem)")
    p.add_argument(
        "--step",
        type=int,
        default=None,
        help="the backbone after this step (default: after the last finished task)",
    )
    p.add_argument("--base", help="the base model folder, if it moved (same weights)")
    p.add_argument("--out", required=True, help="plain fine-tuned model folder")
    add_overwrite(p)


@command("continual-export", "one task of a continual run as a plain fine-tuned model folder")(
    _add_export
)
def continual_export(args):
    from pretrainkit.workflows.continual import export_task

    out = export_task(args.run, args.task, args.out, args.step, args.base, args.overwrite)
    return {"out": str(out)}
