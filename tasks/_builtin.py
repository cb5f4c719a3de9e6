"""Registers every YAML definition shipped in this folder under its `name`."""
from pathlib import Path

import yaml

from slimbench.tasks import TASKS

for _path in sorted(Path(__file__).parent.glob("*.yaml")):
    with open(_path) as _fh:
        _name = yaml.safe_load(_fh)["name"]
    TASKS.register(_name)(str(_path))
