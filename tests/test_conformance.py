"""Every registered method, built-in or plugin, gets these checks for free.

On two tiny tasks with the layer kinds real models have (a timm ResNet: Conv2d, BatchNorm,
residual additions; a BERT: embeddings, attention with padding masks, LayerNorm), each method
compresses the trained baseline through the one context factory, with the task's test split
replaced by a tripwire. Then: the artifact reloads onto a freshly built model and gives the same
outputs, the reported size is the bytes on disk, the parameter counts are the reloaded model's,
the same seed gives the same bytes, the steps used are within the budget, and the test split
was never touched (the checks are `check_method` in conftest.py, also run on the
architecture-changing test doubles in test_contracts.py).
"""
from __future__ import annotations

import dataclasses

import pytest

from slimbench.core.config import ConfigError, build, to_dict
from slimbench.methods import METHODS, create_method

ALL = METHODS.names()


def test_registry_has_reference_rows():
    assert {"baseline", "half", "torch.dynamic_int8"} <= set(ALL)


@pytest.mark.parametrize("task_name", ["toy-cnn", "toy-transformer"])
@pytest.mark.parametrize("name", ALL)
def test_method_contract(name, task_name, conformance_tasks, method_contract, tmp_path):
    task, baseline = conformance_tasks[task_name]
    method_contract(lambda: create_method(name), task, baseline, tmp_path)


@pytest.mark.parametrize("name", ALL)
def test_config_contract(name):
    cls = METHODS.get(name)
    cfg = cls.config_cls()
    assert dataclasses.is_dataclass(cfg) and cfg.version >= 1
    assert isinstance(cls.version, int) and cls.version >= 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.version = 99  # type: ignore[misc]
    data = {k: v for k, v in to_dict(cfg).items() if k != "version"}
    assert build(cls.config_cls, data, name) == cfg
    assert create_method(create_method(name).spec).config == cfg
    with pytest.raises(ConfigError, match="no_such_field"):
        create_method(f"{name}:no_such_field=1")
    assert cls.description, f"{name} needs a one-line description"
