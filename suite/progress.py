"""Progress bars for long work (training, calibration, evaluation, timing).

One place decides how progress is shown: tqdm on stderr, shown on a terminal and hidden
when output is not a TTY (CI logs) unless forced, so logs stay readable.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator


@dataclass(frozen=True)
class ProgressConfig:
    enabled: bool | None = None  # None: only on a terminal


def track(iterable: Iterable, desc: str, total: int | None = None,
          cfg: ProgressConfig = ProgressConfig(), unit: str = "batch") -> Iterator:
    """Yield from `iterable` while advancing a progress bar (for loops that methods own)."""
    with bar(desc, total, cfg, unit) as update:
        for item in iterable:
            yield item
            update(1)


@contextmanager
def bar(desc: str, total: int | None, cfg: ProgressConfig = ProgressConfig(), unit: str = "it") -> Iterator:
    """Yield an `update(n)` callable backed by a tqdm bar."""
    from tqdm.auto import tqdm

    disable = (not sys.stderr.isatty()) if cfg.enabled is None else not cfg.enabled
    with tqdm(total=total, desc=desc, unit=unit, leave=False, disable=disable, dynamic_ncols=True) as pb:
        yield pb.update
