"""Plugins that each break exactly one conformance check (tests/test_conformance_checks.py).

Each passes every check before its own, so the report shows the check that exists to catch it.
They live in an importable module, as a real plugin does, because the `self-contained` check
imports the method afresh in another interpreter. Never register these: they are wrong on purpose.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from slimbench.methods import Compressed, Method, MethodConfig


@dataclass(frozen=True)
class Cfg(MethodConfig):
    pass


class _Broken(Method):
    family = "quantization"
    config_cls = Cfg
    description = "a deliberately broken plugin"

    def compress(self, model, ctx):
        return model


class BadConfig(_Broken):
    """config: no description (a user reading `slimbench list` learns nothing)."""

    name = "broken.config"
    description = ""


class BadSupports(_Broken):
    """supports: answers True (neither None nor a reason)."""

    name = "broken.supports"

    def supports(self, task, device):
        return True


class BadBudget(_Broken):
    """budget: trains with an optimizer loop of its own, charged to no ledger."""

    name = "broken.budget"

    def compress(self, model, ctx):
        opt = torch.optim.SGD(model.parameters(), lr=1e-4)
        batches = ctx.train_batches()
        for _ in range(3):
            inputs, labels = next(batches)
            opt.zero_grad()
            nn.functional.cross_entropy(model(**inputs), labels).backward()
            opt.step()
        return model.eval()


class BadTestSplit(_Broken):
    """test split: reads the real test split through the task registry, and swallows the error."""

    name = "broken.test_split"

    def compress(self, model, ctx):
        from slimbench.tasks import get_task

        try:
            get_task(ctx.task.name).data().test[0]
        except Exception:
            pass
        return model


class BadRoundTrip(_Broken):
    """round trip: the restore ignores the stored tensors (a freshly initialised model)."""

    name = "broken.round_trip"

    def restore(self, model, tensors, meta):
        return model


class _Hollow(nn.Module):
    """Runs the model it was given but stores none of it (a plain attribute, not a submodule)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.__dict__["inner"] = inner

    def forward(self, **inputs):
        return self.inner(**inputs)


_STASH: dict[str, nn.Module] = {}  # module-level state: lives in the process that ran compress only


class BadSelfContained(_Broken):
    """self-contained: stores no tensor at all, declares the baseline's parameter count, and restores
    the weights from a module-level variable (5,595x "smaller" in the harness before it was caught)."""

    name = "broken.self_contained"

    def compress(self, model, ctx):
        _STASH["model"] = model
        n = sum(p.numel() for p in model.parameters())
        return Compressed(_Hollow(model), meta={"params_total": n, "params_nonzero": n})

    def restore(self, model, tensors, meta):
        return _STASH.get("model", model)


class BadSelfContainedFile(_Broken):
    """self-contained: stores nothing and reads its weights back from a file it wrote elsewhere."""

    name = "broken.self_contained_file"

    @staticmethod
    def stash() -> Path:
        return Path(tempfile.gettempdir()) / f"slimbench-broken-stash-{os.getuid()}.pt"

    def compress(self, model, ctx):
        torch.save(model.state_dict(), self.stash())
        return Compressed(_Hollow(model))

    def restore(self, model, tensors, meta):
        model.load_state_dict(torch.load(self.stash()))
        return model


class BadParams(_Broken):
    """params: the restore makes a weight the artifact does not store (a seeded projection, unused)."""

    name = "broken.params"

    def restore(self, model, tensors, meta):
        model.load_state_dict(tensors)
        gen = torch.Generator().manual_seed(0)
        model.register_parameter("projection", nn.Parameter(torch.randn(64, 64, generator=gen)))
        return model


class BadDeterminism(_Broken):
    """determinism: noise from the operating system's entropy, not from the run's seed."""

    name = "broken.determinism"

    def compress(self, model, ctx):
        noise = int.from_bytes(os.urandom(4), "little") / 2 ** 32
        with torch.no_grad():
            next(model.parameters()).add_(1e-3 * noise)
        return model


class Control(_Broken):
    """Not broken: the plain method the others differ from in one way each (passes every check)."""

    name = "broken.control"


class DeclinesEverything(_Broken):
    """Not broken: unsupported everywhere (plugin check must say that no check ran)."""

    name = "broken.declines"

    def supports(self, task, device):
        return "this plugin runs nowhere"


BROKEN = {"config": BadConfig, "supports": BadSupports, "budget": BadBudget, "test split": BadTestSplit,
          "round trip": BadRoundTrip, "self-contained": BadSelfContained, "params": BadParams,
          "determinism": BadDeterminism}
