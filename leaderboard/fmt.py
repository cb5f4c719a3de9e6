"""Number formatting shared by the HTML and Markdown renderers (one look everywhere)."""
from __future__ import annotations

import math
from typing import Any

MISSING = "–"


def _ok(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def si(v: float | None, unit: str, base: float = 1000.0) -> str:
    """3 significant digits with an SI prefix: 1.23 MB, 45.6 GFLOPs."""
    if not _ok(v):
        return MISSING
    prefixes = ("", "k", "M", "G", "T", "P")
    i, x = 0, float(v)
    while abs(x) >= base and i < len(prefixes) - 1:
        x /= base
        i += 1
    return f"{x:.3g} {prefixes[i]}{unit}"


def size(v: float | None) -> str:
    return si(v, "B")


def flops(v: float | None) -> str:
    return si(v, "FLOPs")


def bops(v: float | None) -> str:
    return si(v, "BOPs")


def ms(v: float | None) -> str:
    if not _ok(v):
        return MISSING
    return f"{v:.3g} ms" if v >= 0.01 else f"{v * 1000:.3g} µs"


def times(v: float | None) -> str:
    """A ratio: 2 decimals, or 2 significant digits below 0.1 (a 400x slowdown is not "0.00x")."""
    if not _ok(v):
        return MISSING
    return f"{v:.2f}×" if abs(v) >= 0.1 else f"{v:.2g}×"


def pct(v: float | None) -> str:
    return f"{100 * v:.2f}" if _ok(v) else MISSING


def acc_ci(mean: float | None, ci: float | None) -> str:
    """Accuracy in percent with its 95% CI half-width when there are >= 2 seeds."""
    if not _ok(mean):
        return MISSING
    return f"{pct(mean)} ± {100 * ci:.2f}" if _ok(ci) else pct(mean)


def delta_pp(v: float | None) -> str:
    return f"{100 * v:+.2f} pp" if _ok(v) else MISSING


def sort_value(v: Any) -> str:
    """What a cell's `data-v` holds: a plain number, or empty for missing (sorted last)."""
    if isinstance(v, bool):
        return "1" if v else "0"
    if _ok(v):
        return repr(float(v))
    return ""
