"""Errors that tell the user what is wrong and where (file, line, key)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class PretrainkitError(Exception):
    """Base class of every error pretrainkit raises on purpose."""


class ConfigError(PretrainkitError, ValueError):
    """A configuration key or value is invalid."""


class DataError(PretrainkitError, ValueError):
    """Input data is malformed; the message names the file and, where known, the line."""

    def __init__(self, message: str, path: object = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}"
            if line is not None:
                where += f":{line}"
            where += ": "
        super().__init__(where + message)
        self.path = path
        self.line = line


class CheckpointError(PretrainkitError, ValueError):
    """A checkpoint does not match what is expected (keys, shapes, format)."""


class OutputError(PretrainkitError):
    """An output cannot be written where it was asked for (exists, disk full, read-only, ...);
    the message names the path and the cause, and nothing half-written is left there."""


class OutputExistsError(OutputError):
    """The output path exists and was not created by this command; ``--overwrite`` replaces it."""


def check_tensor_keys(
    source: str,
    missing: list[str],
    unexpected: list[str],
    wrong: list[str],
    tied: list[str] | tuple[str, ...] = (),
) -> None:
    """Raise one CheckpointError listing every offending key, or return when there is none."""
    parts = []
    if missing:
        parts.append(f"missing tensors: {', '.join(sorted(missing))}")
    if unexpected:
        parts.append(f"unexpected tensors: {', '.join(sorted(unexpected))}")
    if wrong:
        parts.append(f"shape mismatches: {'; '.join(sorted(wrong))}")
    if tied:
        parts.append(f"tied tensors that differ from their source: {', '.join(sorted(tied))}")
    if parts:
        raise CheckpointError(f"{source}: " + " | ".join(parts))


def closest(name: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean X?)' for the closest choice, or '' when none is close."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""
