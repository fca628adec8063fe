"""Parameter-efficient fine-tuning on the command line: the ``--peft`` options of ``finetune``
and the ``merge`` command (a PEFT folder → a plain model folder)."""

from __future__ import annotations

import argparse
from typing import Any

from pretrainkit.cli.commands import add_overwrite, command
from pretrainkit.cli.options import add_union_options, given_union_options
from pretrainkit.peft.options import OPTIONS

PEFT_PREFIX = "peft__"


def add_peft_options(parser: argparse.ArgumentParser) -> None:
    """``--peft METHOD`` and every method's options (``pretrainkit.peft.options``)."""
    group = parser.add_argument_group("parameter-efficient fine-tuning")
    group.add_argument(
        "--peft",
        choices=sorted(OPTIONS),
        default=None,
        help="train only LoRA updates, bottleneck adapters, the biases (bitfit) or the norms "
        "(layernorm), and the task head; the run's model is a PEFT folder holding only those "
        "tensors and the base folder's path and hash (default: full fine-tuning)",
    )
    classes = {name: cls for name, cls in OPTIONS.items() if cls is not None}
    add_union_options(parser, classes, PEFT_PREFIX, "parameter-efficient method options")


def peft_choice(args: argparse.Namespace) -> tuple[str | None, dict[str, Any]]:
    """The method chosen and its options given; an option of another method is an error."""
    method = args.peft
    if method is None:
        given = given_union_options(args, PEFT_PREFIX, None, "full fine-tuning (no --peft)")
        return None, given
    return method, given_union_options(args, PEFT_PREFIX, OPTIONS[method], f"--peft {method}")


def _add_merge(p):
    p.add_argument("--model", required=True, help="PEFT folder (or the run folder holding one)")
    p.add_argument("--out", required=True, help="plain model folder, written whole or not at all")
    add_overwrite(p)


@command("merge", "fold a PEFT folder (finetune --peft) into a plain model folder on its base")(
    _add_merge
)
def merge(args):
    from pretrainkit.peft.folder import merge_folder

    return {"out": str(merge_folder(args.model, args.out, overwrite=args.overwrite))}
