"""slimbench.tasks: standard task definitions (YAML) and their loaders.

Built-in tasks are the `*.yaml` files in this folder; third-party tasks arrive through the
`slimbench.tasks` entry-point group, whose entries point at a YAML file path or a
callable returning the raw task dict.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from slimbench.core.recipe import SearchBudget, TrainRecipe  # noqa: F401
from slimbench.core.registry import Registry
from slimbench.tasks.base import (  # noqa: F401
    PROFILES, MethodData, Task, TaskConfig, TaskData, config_from_dict, load_yaml)

_HERE = Path(__file__).parent

TASKS: Registry[Any] = Registry("task", group="slimbench.tasks", builtins=("slimbench.tasks._builtin",))


def raw_task(name: str) -> dict[str, Any]:
    entry = TASKS.get(name)
    if callable(entry):
        return entry()
    return load_yaml(entry)


def get_task(name: str, profile: str = "default") -> Task:
    """The front door: a task by name, with a profile applied."""
    return Task(config_from_dict(raw_task(name), profile))


def list_tasks() -> list[str]:
    return TASKS.names()
