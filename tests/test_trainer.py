"""The one trainer: exact step budget, determinism, loss functions, optimizers, parameter groups,
hooks between backward and step, and the budget ledger every method's training is charged to."""
from __future__ import annotations

import copy

import pytest
import torch

from slimbench.core.recipe import BudgetExceeded, StepLedger, TrainRecipe
from slimbench.suite.trainer import BudgetedTrainer, Trainer, cross_entropy, lr_lambda


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


def test_loss_function_changes_training(toy_task):
    base = toy_task.build_model()
    plain, l1 = copy.deepcopy(base), copy.deepcopy(base)
    recipe = TrainRecipe(steps=20, batch_size=32, lr=1e-2, weight_decay=0.0)
    Trainer().fit(plain, toy_task.train_stream(32, 0), recipe, seed=0)
    Trainer().fit(l1, toy_task.train_stream(32, 0), recipe, seed=0,
                  loss=lambda m, i, lo, la: cross_entropy(m, i, lo, la) + 0.05 * sum(p.abs().sum() for p in m.parameters()))
    norm = lambda m: sum(float(p.detach().abs().sum()) for p in m.parameters())  # noqa: E731
    assert norm(l1) < norm(plain)


def test_before_step_sees_gradients_and_can_mask_them(toy_task):
    """A hook between backward and step (how pruning keeps masked weights at zero)."""
    model = toy_task.build_model()
    first = model.net[0].weight
    with torch.no_grad():
        first[:, :8] = 0
    grads = []

    def mask(m, step):
        grads.append(m.net[0].weight.grad is not None)
        m.net[0].weight.grad[:, :8] = 0

    Trainer().fit(model, toy_task.train_stream(32, 0), TrainRecipe(steps=5, batch_size=32, lr=1e-2,
                                                                   weight_decay=0.0), seed=0, before_step=mask)
    assert grads == [True] * 5 and torch.count_nonzero(first[:, :8]) == 0


def test_sgd_step_is_exactly_sgd(toy_task):
    """One step of the recipe's SGD (no momentum, clipping or decay) is w - lr * grad."""
    import torch.nn.functional as F

    model = toy_task.build_model()
    batch = next(iter(toy_task.loader("train", 16)))
    ref = copy.deepcopy(model)
    F.cross_entropy(ref(**batch[0]), batch[1]).backward()
    expected = {n: p.detach() - 0.1 * p.grad for n, p in ref.named_parameters()}
    recipe = TrainRecipe(steps=1, batch_size=16, lr=0.1, optimizer="sgd", momentum=0.0, weight_decay=0.0,
                         warmup=0.0, schedule="constant", grad_clip=None)
    Trainer().fit(model, [batch], recipe, seed=0)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), expected[n])


def test_optimizer_choice_and_param_groups(toy_task):
    """SGD from the recipe; a group with lr 0 stays put while the rest trains."""
    model = toy_task.build_model()
    frozen_before = model.net[0].weight.detach().clone()
    other = [p for n, p in model.named_parameters() if not n.startswith("net.0.")]
    recipe = TrainRecipe(steps=4, batch_size=32, lr=0.05, optimizer="sgd", weight_decay=0.0, warmup=0.0)
    before = [p.detach().clone() for p in other]
    Trainer().fit(model, toy_task.train_stream(32, 0), recipe, seed=0,
                  param_groups=[{"params": [model.net[0].weight, model.net[0].bias], "lr": 0.0},
                                {"params": other}])
    assert torch.equal(model.net[0].weight, frozen_before)
    assert any(not torch.equal(a, b) for a, b in zip(before, other))
    with pytest.raises(Exception, match="optimizer='lion'"):
        TrainRecipe(steps=1, optimizer="lion")


def test_budgeted_trainer_charges_before_training(toy_task):
    ledger = StepLedger("quant.test", {"finetune": 5, "search": 0})
    trainer = BudgetedTrainer(Trainer(), ledger)
    model = toy_task.build_model()
    trainer.fit(model, toy_task.train_stream(32, 0), TrainRecipe(steps=3, batch_size=32), seed=0)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(BudgetExceeded, match=r"quant.test asked for 3 optimizer steps .* only 2 of 5 are left"):
        trainer.fit(model, toy_task.train_stream(32, 0), TrainRecipe(steps=3, batch_size=32), seed=0)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # refused before any step
    with pytest.raises(BudgetExceeded, match="search"):
        trainer.fit(model, toy_task.train_stream(32, 0), TrainRecipe(steps=1, batch_size=32), seed=0,
                    account="search")
    assert ledger.summary() == {"finetune": {"used": 3, "budget": 5}, "search": {"used": 0, "budget": 0, "candidates": 0}}


def test_zero_steps_and_empty_data(toy_task):
    model = toy_task.build_model()
    assert Trainer().fit(model, [], TrainRecipe(steps=0), seed=0).steps == 0
    with pytest.raises(ValueError, match="training data is empty"):
        Trainer().fit(model, [], TrainRecipe(steps=3), seed=0)
    with pytest.raises(Exception, match="steps=-1 must be >= 0"):
        TrainRecipe(steps=-1)
