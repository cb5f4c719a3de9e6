"""Small, dependency-free statistics for the leaderboard.

scipy is not a dependency of slimbench, and the leaderboard only needs the two-sided 95%
Student-t quantile (seeds are few, so the normal 1.96 would understate the uncertainty);
the Pareto front is `core.pareto`'s, shared with the search methods. `rows` applies `mean_ci` to the
task metric's own value (accuracy, perplexity...), so a CI is in that metric's units.
"""
from __future__ import annotations

import math
from typing import Sequence

from slimbench.core.pareto import pareto_front  # noqa: F401  (the leaderboard's front is the suite's one)

# t_{0.975, df} for df = 1..30 (two-sided 95%).
_T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
         2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
         2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)
_Z975 = 1.959963984540054


def t_quantile_975(df: int) -> float:
    """Two-sided 95% Student-t quantile: exact table up to df=30, Cornish-Fisher beyond.

    The expansion is accurate to ~1e-4 for df > 30, far below what seed noise resolves.
    """
    if df < 1:
        raise ValueError(f"df={df} must be >= 1")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return (z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * df ** 3))


def mean_ci(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and the half-width of its 95% CI (Student t); half-width None when n < 2."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    n = len(vals)
    if n == 0:
        return None, None
    mean = math.fsum(vals) / n
    if n < 2:
        return mean, None
    var = math.fsum((v - mean) ** 2 for v in vals) / (n - 1)
    return mean, t_quantile_975(n - 1) * math.sqrt(var / n)


def median(values: Sequence[float]) -> float | None:
    """Median ignoring missing values; None when there are none."""
    vals = sorted(float(v) for v in values if v is not None and not math.isnan(float(v)))
    if not vals:
        return None
    mid = len(vals) // 2
    return vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2
