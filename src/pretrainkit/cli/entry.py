"""The process entry point of ``pretrainkit`` and ``python -m pretrainkit``.

It defers the heavy libraries (``cli/deferred.py``) before any pretrainkit module is imported,
so that not even the YAML parser is executed for ``--help``, then hands over to ``main``.
"""

from __future__ import annotations


def run() -> int:
    from pretrainkit.cli.deferred import defer

    defer()
    from pretrainkit.cli.main import main

    return main()
