"""``pretrainkit <command>``: every command with a one-line summary in ``--help``."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from pretrainkit.cli.commands import COMMANDS
from pretrainkit.errors import PretrainkitError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pretrainkit",
        description="Assemble Transformer models from named parts, pre-train, fine-tune, serve.",
        allow_abbrev=False,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, (summary, add_arguments, _) in COMMANDS.items():
        p = sub.add_parser(name, help=summary, description=summary, allow_abbrev=False)
        add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.command:
        parser.print_help()
        return 0
    _, _, run = COMMANDS[args.command]
    if extra and not getattr(run, "accepts_model_overrides", False):
        parser.error(f"unrecognised arguments: {' '.join(extra)}")
    try:
        result = run(args, extra) if getattr(run, "accepts_model_overrides", False) else run(args)
    except PretrainkitError as error:
        print(f"pretrainkit {args.command}: error: {error}", file=sys.stderr)
        return 2
    if isinstance(result, dict):
        print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
