"""The public registry of tasks: a name -> ``Task`` subclass table that anyone can extend.

The three built-in tasks register themselves when ``centernet.tasks`` is imported; a new task is a
``Task`` subclass decorated with ``register_task`` (or passed to it), after which recipes,
``CenterNet(task=...)``, ``centernet train`` / ``val`` / ``predict`` and checkpoints know its name.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from centernet.config import TASK_DEFAULTS
from centernet.tasks.base import Task

_TASKS: dict[str, type[Task]] = {}

T = TypeVar("T", bound=type[Task])


def register_task(cls: T) -> T:
    """Make the ``Task`` subclass ``cls`` known under ``cls.name`` (a class decorator).

    Its ``config_defaults`` become the defaults of every experiment naming the task. Registering
    a name again replaces the earlier class (a re-imported module, a user's variant).
    """
    if not (isinstance(cls, type) and issubclass(cls, Task)) or not isinstance(getattr(cls, "name", None), str):
        raise TypeError(f"{cls!r} is not a Task subclass with a name")
    _TASKS[cls.name] = cls
    TASK_DEFAULTS[cls.name] = cls.config_defaults
    return cls


def task_names() -> list[str]:
    """Names of the registered tasks, in registration order."""
    return list(_TASKS)


def task_class(name: str) -> type[Task]:
    """The ``Task`` subclass registered as ``name``."""
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(_TASKS)}")
    return _TASKS[name]


def get_task(name: str, num_classes: int, **options: Any) -> Task:
    """Build the task called ``name`` (``"ctdet"``, ``"multi_pose"``, ``"ddd"`` or a registered one).

    Args:
        name: task name.
        num_classes: classes of the centre heat map.
        options: keyword arguments of the task's constructor (loss weights, ``max_objects``...).
    """
    return task_class(name)(num_classes, **options)


def task_for_heads(name: str, num_classes: int, heads: Mapping[str, int]) -> Task:
    """The task ``name`` configured to drive a network with exactly ``heads`` (from a checkpoint)."""
    cls = task_class(name)
    return cls(num_classes, **cls.options_for_heads(heads, num_classes))


def task_name_for_heads(heads: Mapping[str, int]) -> str:
    """The registered task whose heads ``heads`` are (a checkpoint without metadata: the original's).

    Raises:
        ValueError: no registered task, or more than one, has these heads.
    """
    fitting = [name for name, cls in _TASKS.items() if cls.fits_heads(heads)]
    if len(fitting) != 1:
        found = "no registered task" if not fitting else f"the tasks {', '.join(fitting)}"
        raise ValueError(f"{found} fit(s) the heads {', '.join(heads)}")
    return fitting[0]
