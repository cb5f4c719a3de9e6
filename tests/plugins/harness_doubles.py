"""A method whose `compress` a test sets (`Hook.on_compress`), importable by the measurement
process: the harness measures artifacts in a fresh interpreter, which imports the method's class
from its module, so a test double must live in a module, not be patched into a built-in."""
from __future__ import annotations

from dataclasses import dataclass

from slimbench.methods import Method, MethodConfig


@dataclass(frozen=True)
class HookConfig(MethodConfig):
    pass


class Hook(Method):
    """Stores the plain model whatever `on_compress` returns as its `Compressed`; restores by default."""

    name = "test.hook"
    family = "reference"
    config_cls = HookConfig
    description = "a test double whose compress the test sets"

    def on_compress(self, model, ctx):  # replaced by the test (monkeypatch.setattr(Hook, "on_compress", ...))
        return model

    def compress(self, model, ctx):
        return self.on_compress(model, ctx)
