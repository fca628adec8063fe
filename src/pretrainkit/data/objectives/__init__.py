"""Pre-training objectives: one file each, registered by name in ``OBJECTIVES``.

An objective owns how instances are built from token shards (its stream), how they are
collated, which targets a model needs to train on them and what it asks of the tokenizer and
the sequence length. ``preprocess``, ``pretrain`` and the CLI read it from here. Importing this
package imports every module in it, so a new objective is one new file.
"""

import importlib
import pkgutil

from pretrainkit.data.objectives.base import OBJECTIVES, Objective, get_objective

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["OBJECTIVES", "Objective", "get_objective"]
