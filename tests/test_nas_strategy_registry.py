"""Search strategies are a registry like methods: the built-ins are registered under the names the
configs list, a new one is one decorated class, and an unknown name fails with the valid choices."""
from __future__ import annotations

import pytest

from slimbench.core.registry import UnknownNameError
from slimbench.methods.nas.configs import STRATEGIES
from slimbench.methods.nas.strategies import (STRATEGY_REGISTRY, Strategy, TPESearch, budgeted, make_strategy,
                                              register_strategy, search)


def test_builtins_are_registered_under_the_config_names():
    assert STRATEGY_REGISTRY.names() == sorted(STRATEGIES)
    assert isinstance(make_strategy("tpe", (2, 2), 0, candidates=4), TPESearch)
    assert make_strategy("evolution", (3, 3), 0, candidates=4).population == 2  # capped as `budgeted` says


def test_unknown_strategy_names_the_choices():
    with pytest.raises(UnknownNameError, match="Did you mean 'evolution'.*Valid choices: evolution, nsga2, random"):
        make_strategy("evolutoin", (2, 2), 0)
    with pytest.raises(UnknownNameError, match="unknown search strategy 'nope'"):
        budgeted("nope", 4)


def test_a_new_strategy_is_one_registered_class():
    @register_strategy("test.first")
    class First(Strategy):
        """Always the first choice of every dim (a stand-in for a real strategy)."""

        def ask(self):
            return tuple(0 for _ in self.cards)

    try:
        steps = search(make_strategy("test.first", (2, 3), 0, candidates=2), lambda a, i: _outcome(), 2,
                       max_proposals=3)
        assert [s.arch for s in steps] == [(0, 0)] * 3 and [s.repeat for s in steps] == [False, True, True]
        with pytest.raises(TypeError, match="must be a subclass of Strategy"):
            register_strategy("test.bad")(lambda cards, seed: None)
    finally:
        STRATEGY_REGISTRY._entries.pop("test.first", None)  # leave the registry as the other tests expect it
        STRATEGY_REGISTRY._origin.pop("test.first", None)


def _outcome():
    from slimbench.methods.nas.strategies import Outcome
    return Outcome(0.5)
