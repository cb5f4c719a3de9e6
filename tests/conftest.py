"""Shared fixtures: the synthetic `toy` task registered for tests, temp results dirs."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

FIXTURES = Path(__file__).parent / "fixtures"


def _register_toy() -> None:
    from slimbench.tasks import TASKS
    if "toy" not in TASKS:
        TASKS.register("toy")(str(FIXTURES / "toy.yaml"))


_register_toy()


@pytest.fixture
def toy_task():
    from slimbench.tasks import get_task
    return get_task("toy", "default")


@pytest.fixture(scope="session")
def toy_baseline():
    """A trained toy baseline (session-wide; tests must deep-copy before changing it)."""
    from slimbench.suite.trainer import Trainer
    from slimbench.tasks import get_task

    task = get_task("toy", "default")
    model = task.build_model()
    Trainer().fit(model, task.train_stream(task.config.train.batch_size, 0), task.config.train, 0)
    return model.eval()
