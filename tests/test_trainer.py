"""The one trainer: exact step budget, determinism, extra loss terms and hooks."""
from __future__ import annotations

import copy

import pytest
import torch

from slimbench.suite.trainer import Trainer, lr_lambda
from slimbench.tasks.base import TrainRecipe


def test_lr_schedule_shapes():
    r = TrainRecipe(steps=100, warmup=0.1, schedule="cosine")
    f = lr_lambda(r)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.5, abs=0.02) and f(99) < 0.01
    assert lr_lambda(TrainRecipe(steps=10, warmup=0.0, schedule="linear"))(5) == pytest.approx(0.5)


def test_budget_determinism_and_hooks(toy_task):
    m1, m2 = toy_task.build_model(), toy_task.build_model()
    recipe = TrainRecipe(steps=7, batch_size=32, lr=1e-2)
    seen = []
    r1 = Trainer().fit(m1, toy_task.train_stream(32, 1), recipe, seed=1, after_step=lambda m, s: seen.append(s))
    Trainer().fit(m2, toy_task.train_stream(32, 1), recipe, seed=1, after_step=lambda m, s: None)
    assert r1.steps == 7 and seen == list(range(7)) and len(r1.losses) == 7
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_extra_loss_changes_training(toy_task):
    base = toy_task.build_model()
    plain, l1 = copy.deepcopy(base), copy.deepcopy(base)
    recipe = TrainRecipe(steps=20, batch_size=32, lr=1e-2, weight_decay=0.0)
    Trainer().fit(plain, toy_task.train_stream(32, 0), recipe, seed=0)
    Trainer().fit(l1, toy_task.train_stream(32, 0), recipe, seed=0,
                  extra_loss=lambda m, i, lo, la: 0.05 * sum(p.abs().sum() for p in m.parameters()))
    norm = lambda m: sum(float(p.detach().abs().sum()) for p in m.parameters())  # noqa: E731
    assert norm(l1) < norm(plain)


def test_zero_steps_and_empty_data(toy_task):
    model = toy_task.build_model()
    assert Trainer().fit(model, [], TrainRecipe(steps=0), seed=0).steps == 0
    with pytest.raises(ValueError, match="training data is empty"):
        Trainer().fit(model, [], TrainRecipe(steps=3), seed=0)
    with pytest.raises(Exception, match="steps=-1 must be >= 0"):
        TrainRecipe(steps=-1)
