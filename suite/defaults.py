"""The embedded default: which method specs `slimbench run` runs on a task when no method is named.

The set lives in `default.yaml` beside this module (one place, shown by `slimbench list default`):
per task, per family, the `main` methods and their `control`s. `--method all` is the other door:
every built-in method at its default config.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

DEFAULT_FILE = Path(__file__).with_name("default.yaml")
OTHER = "other tasks"
ROLES = ("main", "control")
ALL = "all"


@dataclass(frozen=True)
class Entry:
    task: str  # a task name, or OTHER
    family: str
    role: str  # "main" or "control"
    spec: str


def parse(raw: dict, source: str) -> tuple[Entry, ...]:
    """The entries of a default-set mapping {task: {family: {role: [spec, ...]}}}, shape-checked."""
    from slimbench.core.config import ConfigError

    if not isinstance(raw, dict) or OTHER not in raw:
        raise ConfigError(f"{source}: expected a mapping of task names to families, with an {OTHER!r} entry")
    out = []
    for task, families in raw.items():
        if not isinstance(families, dict) or not families:
            raise ConfigError(f"{source}: {task!r} must map family names to {{main: [...], control: [...]}}")
        for family, roles in families.items():
            bad = sorted(set(roles or {}) - set(ROLES)) if isinstance(roles, dict) else [roles]
            if bad or not roles:
                raise ConfigError(f"{source}: {task} / {family}: unknown role(s) {bad}; valid: {', '.join(ROLES)}")
            for role, specs in roles.items():
                if not isinstance(specs, list) or not all(isinstance(s, str) and s for s in specs):
                    raise ConfigError(f"{source}: {task} / {family} / {role} must be a list of method specs")
                out += [Entry(str(task), str(family), role, s) for s in specs]
    return tuple(out)


@cache
def entries() -> tuple[Entry, ...]:
    return parse(yaml.safe_load(DEFAULT_FILE.read_text()), str(DEFAULT_FILE))


def default_tasks(table: tuple[Entry, ...] | None = None) -> list[str]:
    """The tasks the embedded default runs when none is named: those this file lists by name (they
    run offline on a CPU); the standard tasks that need downloads or a GPU run when named."""
    table = entries() if table is None else table
    return list(dict.fromkeys(e.task for e in table if e.task != OTHER))


def specs_for(task: str, table: tuple[Entry, ...] | None = None) -> list[str]:
    """The default specs of one task: its own entries, else those of `other tasks`."""
    table = entries() if table is None else table
    own = [e.spec for e in table if e.task == task]
    return own or [e.spec for e in table if e.task == OTHER]


def validate(table: tuple[Entry, ...] | None = None) -> None:
    """Every spec names a registered method with a valid config (raises ConfigError/UnknownNameError)."""
    from slimbench.methods import create_method

    for e in entries() if table is None else table:
        create_method(e.spec)
