"""Package attributes imported on first use.

A package's ``__init__`` names what it exports and from which module; nothing is imported until
an attribute is read. Preprocessing workers (which need only the tokenizer) and the command-line
parser (which needs only the option dataclasses, see ``cli/deferred.py``) then do not pay for
importing torch through a package they merely pass through.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, exports: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``exports`` maps a name to its module."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
