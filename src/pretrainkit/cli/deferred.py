"""Deferred imports of the heavy libraries while the command line is parsed.

Building the parser imports every task, objective and config module, because their option
dataclasses are the flags. Those modules ``import torch`` / ``import numpy`` at the top, which
costs seconds: ``pretrainkit finetune --help`` used to take 3 s, nearly all of it importing torch
to print text. While the parser is built, those libraries stand in ``sys.modules`` as
``importlib.util.LazyLoader`` modules, which execute on first attribute access. ``--help`` and
argument errors exit before anything touches them. Before a command runs, :func:`realise` loads
every one that is still deferred, so the command sees eagerly imported libraries (no first load
inside a worker thread, where LazyLoader is not thread-safe on Python 3.11).

A module that reads an attribute of a deferred library at import time (``from torch import nn``,
``import torch.nn.functional as F``, ``np.float32`` in a constant) loads it then; that is
correct, only slower, and ``tests/test_cli_startup.py`` names the module that did it.
"""

from __future__ import annotations

import importlib.util
import sys

# Only libraries that modules read while parsing import; anything else stays as it was (torch's
# own import walks sys.modules and would execute every deferred entry).
HEAVY = ("torch", "numpy", "tokenizers", "yaml")


class _Deferred(importlib.util._LazyModule):  # type: ignore[name-defined,misc]
    """LazyLoader's module, except that reading ``__spec__`` does not execute it: on Python
    3.11 every ``import torch`` statement reads ``torch.__spec__`` (is it still initialising?),
    which would load it at the first module that imports it."""

    def __getattribute__(self, attr: str):  # type: ignore[no-untyped-def]
        if attr == "__spec__":
            return object.__getattribute__(self, "__dict__")["__spec__"]
        return super().__getattribute__(attr)


def defer(names: tuple[str, ...] = HEAVY) -> None:
    """Put a lazily executed module in ``sys.modules`` for each of ``names`` not yet imported."""
    for name in names:
        if name in sys.modules:
            continue
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            continue  # not installed: the import fails later where it is needed, as before
        spec.loader = importlib.util.LazyLoader(spec.loader)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)  # executes nothing yet: marks the module lazy
        module.__class__ = _Deferred


def realise(skip: tuple[str, ...] = ()) -> None:
    """Execute every deferred module that nothing has touched yet, but those in ``skip`` (a
    command that never uses them; they still load on first use, in the main thread)."""
    for name in HEAVY:
        module = sys.modules.get(name)
        if name in skip:
            continue
        if type(module) is _Deferred:
            module.__name__  # noqa: B018  (reading an attribute executes it)
