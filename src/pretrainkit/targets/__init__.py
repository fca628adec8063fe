"""Target slot: head + loss + metrics. A downstream task is the same model with another target.

Every module of this package registers its targets on import; all of them are imported here,
so a new target is one new file.
"""

import importlib
import pkgutil

from pretrainkit.targets.base import TARGETS, Target, TargetOutput

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["TARGETS", "Target", "TargetOutput"]
