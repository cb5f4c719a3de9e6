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

import pytest

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
    from slimbench.suite.conformance import config_checks

    assert config_checks(name) is None
