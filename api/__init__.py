"""slimbench: a benchmark suite for neural-network compression.

From Python: `compress`, `save`, `load`, `measure` and `results` (see `slimbench.suite.api`).
They are imported on first use, so `import slimbench.core` (torch-free) stays light.
"""
from __future__ import annotations

from typing import Any

__all__ = ["compress", "save", "load", "measure", "results", "CompressedModel", "MissingInput"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from slimbench.suite import api
        return getattr(api, name)
    raise AttributeError(f"module 'slimbench' has no attribute {name!r}")
