"""Every registered method, built-in or plugin, gets these checks for free.

On the synthetic toy task: compress, serialize, reload on a fresh skeleton; the reloaded model
must give the same outputs, the reported size must be the bytes on disk, the same seed must give
the same artifact, and configs must round-trip and reject unknown keys.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import os

import pytest
import torch

from slimbench.methods import METHODS, CompressionContext, create_method
from slimbench.suite.artifact import load_artifact, save_artifact
from slimbench.suite.config import ConfigError, build, to_dict
from slimbench.suite.trainer import Trainer

ALL = METHODS.names()


def _ctx(task, baseline, seed=0):
    cfg = task.config
    return CompressionContext(
        task=task, calibration=lambda: task.calibration_batches(),
        train_batches=lambda: task.train_stream(cfg.finetune.batch_size, seed), trainer=Trainer(),
        teacher=baseline, device=torch.device("cpu"), seed=seed, budget_steps=cfg.finetune.steps,
        lr=cfg.finetune.lr)


def _compress(name, task, baseline, seed=0):
    method = create_method(name)
    reason = method.supports(task, "cpu")
    if reason:
        pytest.skip(f"{name} unsupported on CPU: {reason}")
    torch.manual_seed(seed)
    return method, method.compress(copy.deepcopy(baseline), _ctx(task, baseline, seed)).eval()


def _digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_registry_has_reference_rows():
    assert {"baseline", "half", "torch.dynamic_int8"} <= set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_round_trip_and_honest_size(name, toy_task, toy_baseline, tmp_path):
    method, compressed = _compress(name, toy_task, toy_baseline)
    info = save_artifact(compressed, method, tmp_path / "a")
    on_disk = sum(os.path.getsize(tmp_path / "a" / f) for f in os.listdir(tmp_path / "a"))
    assert info.size_bytes == on_disk
    reloaded = load_artifact(tmp_path / "a", copy.deepcopy(toy_baseline), method).eval()
    inputs = toy_task.example_inputs(8)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs), compressed(**inputs))
        out = reloaded(**inputs)
    assert out.shape == (8, toy_task.config.num_classes) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ALL)
def test_deterministic_with_seed(name, toy_task, toy_baseline, tmp_path):
    m1, c1 = _compress(name, toy_task, toy_baseline, seed=3)
    m2, c2 = _compress(name, toy_task, toy_baseline, seed=3)
    save_artifact(c1, m1, tmp_path / "1")
    save_artifact(c2, m2, tmp_path / "2")
    assert _digest(tmp_path / "1" / "model.safetensors") == _digest(tmp_path / "2" / "model.safetensors")


@pytest.mark.parametrize("name", ALL)
def test_config_contract(name):
    cls = METHODS.get(name)
    cfg = cls.config_cls()
    assert dataclasses.is_dataclass(cfg) and cfg.version >= 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.version = 99  # type: ignore[misc]
    data = {k: v for k, v in to_dict(cfg).items() if k != "version"}
    assert build(cls.config_cls, data, name) == cfg
    with pytest.raises(ConfigError, match="no_such_field"):
        create_method(f"{name}:no_such_field=1")
    assert cls.description, f"{name} needs a one-line description"
