"""The test-split seal: while a method compresses, every read of any task's test split fails.

Every `TaskData` wraps its test split in a guard (`guard`), so the wire sits where every read
goes through, whichever object a method reaches it by: its own context (which holds no test
split at all), a `get_task(...).data().test` of its own, or a loader it calls itself. While
`sealed()` is active in this process, touching a guarded split (its length, an item, an
iterator, any attribute) records the read on the wire and raises `TestSplitRead`; a method that
catches the error is still caught, because the wire remembers (`Wire.tripped`).

The seal is per process: the harness and the conformance checks compress one method at a time
per process (a distributed run compresses in a worker process of its own).
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from torch.utils.data import Dataset, IterableDataset

TEST_READ = "the method read the test split (methods get train and validation data only)"


class TestSplitRead(RuntimeError):
    """Raised on a read of a sealed test split."""

    __test__ = False  # not a pytest test class


@dataclass
class Wire:
    """What was read while sealed: one entry per touch (`len`, `item 3`, `iter`, `attr labels`)."""

    reads: list[str] = field(default_factory=list)

    @property
    def tripped(self) -> bool:
        return bool(self.reads)


class _Seal:
    """The process's active wire (None: unsealed). A lock, since the harness's heartbeat and
    progress threads share the process (they never read data, but the state must stay whole)."""

    lock = threading.Lock()
    wire: Wire | None = None


@contextmanager
def sealed() -> Iterator[Wire]:
    """Seal every test split in this process for the duration; yields the wire to inspect after."""
    wire = Wire()
    with _Seal.lock:
        if _Seal.wire is not None:
            raise RuntimeError("the test split is already sealed in this process (one compression at a time)")
        _Seal.wire = wire
    try:
        yield wire
    finally:
        with _Seal.lock:
            _Seal.wire = None


def _touch(what: str) -> None:
    wire = _Seal.wire
    if wire is not None:
        wire.reads.append(what)
        raise TestSplitRead(f"{TEST_READ}: {what}")


class GuardedSplit(Dataset):
    """A map-style test split behind the seal."""

    def __init__(self, inner: Any):
        object.__setattr__(self, "_inner", inner)

    def __len__(self) -> int:
        _touch("len")
        return len(self._inner)

    def __getitem__(self, i: Any) -> Any:
        _touch(f"item {i!r}")
        return self._inner[i]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_inner":  # copy/pickle probes, half-built objects
            raise AttributeError(name)
        _touch(f"attribute {name!r}")
        return getattr(self._inner, name)

    def __repr__(self) -> str:
        return f"GuardedSplit({type(self._inner).__name__})"


class GuardedStream(IterableDataset):
    """A streaming (iterable) test split behind the seal."""

    def __init__(self, inner: Any):
        object.__setattr__(self, "_inner", inner)

    def __iter__(self) -> Iterator[Any]:
        _touch("iter")
        return iter(self._inner)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_inner":
            raise AttributeError(name)
        _touch(f"attribute {name!r}")
        return getattr(self._inner, name)

    def __repr__(self) -> str:
        return f"GuardedStream({type(self._inner).__name__})"


def guard(split: Any) -> Any:
    """`split` behind the seal (None and already-guarded splits as they are)."""
    if split is None or isinstance(split, (GuardedSplit, GuardedStream)):
        return split
    return GuardedStream(split) if isinstance(split, IterableDataset) else GuardedSplit(split)
