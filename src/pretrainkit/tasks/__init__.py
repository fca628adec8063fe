"""Downstream tasks: one file per task, registered by name in ``TASKS`` (see ``tasks.base``).

Importing this package imports every module in it, so every task registers and
``TASKS.names()`` lists them all; a new task is one new file.
"""

import importlib
import pkgutil

from pretrainkit.tasks.base import TASK_FILE, TASKS, Task, TaskOptions, build_task, task_of

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["TASKS", "TASK_FILE", "Task", "TaskOptions", "build_task", "task_of"]
