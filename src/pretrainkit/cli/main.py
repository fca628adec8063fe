"""``pretrainkit <command>``: every command with a one-line summary in ``--help``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from pretrainkit.cli.commands import COMMANDS
from pretrainkit.cli.options import read_config_file
from pretrainkit.errors import ConfigError, PretrainkitError, closest


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


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]
    raise KeyError(name)


def _apply_config_file(
    parser: argparse.ArgumentParser, sub: argparse.ArgumentParser, path: str, argv: list[str] | None
):
    """defaults < config file < flags: the file's values become the parser's defaults."""
    values = read_config_file(path)
    dests = {a.dest for a in sub._actions if a.dest not in ("help", "config")}
    dests |= set(sub._defaults)
    for key in values:
        if key not in dests:
            raise ConfigError(
                f"{path}: unknown option {key!r}{closest(key, dests)}; "
                f"valid options: {', '.join(sorted(dests))}"
            )
    sub.set_defaults(**values)
    return parser.parse_known_args(argv)


def _check_extra(sub: argparse.ArgumentParser, extra: list[str], overrides: bool) -> None:
    flags = [o for a in sub._actions for o in a.option_strings]
    for token in extra:
        if token.startswith("--model.") and overrides:
            continue
        if token.startswith("-"):
            name = token.split("=")[0]
            raise ConfigError(f"unrecognised option {name}{closest(name, flags)}")
    if extra and not overrides:
        raise ConfigError(f"unrecognised arguments: {' '.join(extra)}")


def _leave_process_group(clean: bool) -> None:
    # Distributed runs leave their process group before interpreter finalisation (see
    # distributed.parallel.shutdown); other commands never imported torch.distributed.
    if "torch.distributed" in sys.modules:
        from pretrainkit.distributed.parallel import shutdown

        shutdown(clean)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # Under torchrun (which sets RANK) only rank 0 reports; the others log warnings and errors.
    main_process = os.environ.get("RANK", "0") in ("", "0")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO if main_process else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.command:
        parser.print_help()
        return 0
    _, _, run = COMMANDS[args.command]
    overrides = getattr(run, "accepts_model_overrides", False)
    try:
        sub = _subparser(parser, args.command)
        if getattr(args, "config", None):
            args, extra = _apply_config_file(parser, sub, args.config, argv)
        _check_extra(sub, extra, overrides)
        result = run(args, extra) if overrides else run(args)
    except PretrainkitError as error:
        _leave_process_group(clean=False)
        print(f"pretrainkit {args.command}: error: {error}", file=sys.stderr)
        return 2
    _leave_process_group(clean=True)
    if isinstance(result, dict) and main_process:
        print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
