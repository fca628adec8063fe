"""Downstream tasks: one file per task, registered by name in ``TASKS`` (see ``tasks.base``).

Importing this package registers every task, so ``TASKS.names()`` lists them all.
"""

from pretrainkit.tasks import classification, regression  # noqa: F401 - they register
from pretrainkit.tasks.base import TASK_FILE, TASKS, Task, TaskOptions, build_task, task_of

__all__ = ["TASKS", "TASK_FILE", "Task", "TaskOptions", "build_task", "task_of"]
