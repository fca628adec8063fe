"""``pretrainkit <command>``: every command with a one-line summary in ``--help``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from pretrainkit.cli.commands import COMMANDS
from pretrainkit.cli.deferred import defer, realise
from pretrainkit.cli.options import read_config_file
from pretrainkit.errors import ConfigError, PretrainkitError, closest

# Set to 1 (or pass --debug) to see the full traceback of an error, for a bug report.
DEBUG_ENV = "PRETRAINKIT_DEBUG"
# Commands that only read or print: no threads to set, no load warning.
_LIGHT_COMMANDS = {"presets", "plot"}
# Commands that never use PyTorch: it is not even imported (cli/deferred.py), so that
# `preprocess` starts in a fraction of a second; their --threads caps the tokenizer library.
_TORCH_FREE_COMMANDS = {"presets", "plot", "vocab", "preprocess"}


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps help text at spaces only: names such as xlm-roberta or --checkpoint-format stay
    whole (argparse's textwrap would break them at the hyphen)."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        import textwrap

        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or with ``only`` the arguments of that command alone (the
    others keep their one-line summary for ``pretrainkit --help``; ``only=""``: summaries
    alone): a command's flags come from dataclasses of its modules, so building all of them
    imports every module."""
    parser = argparse.ArgumentParser(
        prog="pretrainkit",
        description="Assemble Transformer models from named parts, pre-train, fine-tune, serve.",
        allow_abbrev=False,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"show the full traceback of an error (also: {DEBUG_ENV}=1)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, (summary, add_arguments, _) in COMMANDS.items():
        p = sub.add_parser(
            name,
            help=summary,
            description=summary,
            allow_abbrev=False,
            formatter_class=_HelpFormatter,
        )
        if only is not None and name != only:
            continue
        add_arguments(p)
        if name not in _LIGHT_COMMANDS:
            p.add_argument(
                "--threads",
                type=int,
                default=None,
                help="threads of the tokenizer library per process (RAYON_NUM_THREADS; default: "
                "one per core)"
                if name in _TORCH_FREE_COMMANDS
                else "CPU threads for PyTorch (default: PyTorch's choice); on a busy machine "
                "--threads 1 is often faster",
            )
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
    value_next = False
    for token in extra:
        if value_next:  # the value of --model.KEY, which may look like an option (-64)
            value_next = False
            continue
        if token.startswith("--model.") and overrides:
            value_next = "=" not in token
            continue
        if token.startswith("-"):
            name = token.split("=")[0]
            raise ConfigError(f"unrecognised option {name}{closest(name, flags)}")
    if extra and not overrides:
        raise ConfigError(f"unrecognised arguments: {' '.join(extra)}")


def _set_threads(threads: int | None, torch_free: bool) -> None:
    """Apply --threads, and warn once when the machine is busier than its cores."""
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {threads}")
        if torch_free:  # read by `tokenizers` when it first runs in parallel, and by workers
            os.environ["RAYON_NUM_THREADS"] = str(threads)
        else:
            import torch

            torch.set_num_threads(threads)
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this platform
        return
    cores = os.cpu_count() or 1
    if load > cores:
        logging.getLogger("pretrainkit").warning(
            "load average %.1f exceeds the %d CPU cores: timings and throughput will be "
            "unreliable%s",
            load,
            cores,
            "; consider --threads 1" if threads is None else "",
        )


def _error_line(error: BaseException) -> str:
    """One line for an error that is not pretrainkit's own: the path and the cause."""
    from pretrainkit.fileio import describe_os_error

    if isinstance(error, OSError):
        return describe_os_error(error)
    return f"{type(error).__name__}: {error}"


def _leave_process_group(clean: bool) -> None:
    # Distributed runs leave their process group before interpreter finalisation (see
    # distributed.parallel.shutdown); other commands never imported torch.distributed.
    if "torch.distributed" in sys.modules:
        from pretrainkit.distributed.parallel import shutdown

        shutdown(clean)


def _command_of(argv: list[str]) -> str:
    """The command named on the line (the first word that is not a top-level option), or ""
    when there is none or it is unknown: argparse then prints the list or the error."""
    for token in argv:
        if not token.startswith("-"):
            return token if token in COMMANDS else ""
    return ""


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    # Torch, numpy and friends stay unexecuted until the line has parsed, so --help and a
    # mistyped flag answer at once (cli/deferred.py); a command that runs gets them all loaded.
    defer()  # already done by cli/entry.py when this is the process's entry point
    parser = build_parser(only=_command_of(words))
    args, extra = parser.parse_known_args(argv)
    torch_free = args.command in _TORCH_FREE_COMMANDS
    realise(skip=("torch",) if torch_free else ())
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
    debug = args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        sub = _subparser(parser, args.command)
        if getattr(args, "config", None):
            args, extra = _apply_config_file(parser, sub, args.config, argv)
        _check_extra(sub, extra, overrides)
        if args.command not in _LIGHT_COMMANDS:
            _set_threads(getattr(args, "threads", None), torch_free)
        result = run(args, extra) if overrides else run(args)
    except KeyboardInterrupt:
        # Temporaries were removed by the writers' cleanup on the way out.
        _leave_process_group(clean=False)
        if debug:
            raise
        print(f"pretrainkit {args.command}: interrupted", file=sys.stderr)
        return 130
    except PretrainkitError as error:
        _leave_process_group(clean=False)
        if debug:
            raise
        print(f"pretrainkit {args.command}: error: {error}", file=sys.stderr)
        return 2
    except (OSError, MemoryError) as error:
        # Disk full, read-only, a file where a folder was expected, out of memory: not a bug
        # of ours, so one line (run with --debug for the traceback).
        _leave_process_group(clean=False)
        if debug:
            raise
        print(f"pretrainkit {args.command}: error: {_error_line(error)}", file=sys.stderr)
        return 1
    _leave_process_group(clean=True)
    if isinstance(result, dict) and main_process:
        print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
