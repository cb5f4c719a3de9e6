"""Small, dependency-free statistics for the leaderboard.

scipy is not a dependency of slimbench, and the leaderboard only needs the two-sided 95%
Student-t quantile (seeds are few, so the normal 1.96 would understate the uncertainty)
and a Pareto front.
"""
from __future__ import annotations

import math
from typing import Sequence

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


def pareto_front(points: Sequence[tuple[float, float]]) -> list[bool]:
    """For (accuracy, cost) points, whether each is on the front (max accuracy, min cost).

    A point is dominated when another is at least as accurate and at most as costly, and
    strictly better in one of the two; exact duplicates of a front point stay on the front.
    O(n log n): sweep by increasing cost, keeping the best accuracy seen so far.
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][1], -points[i][0]))
    front = [False] * len(points)
    best_acc, best_cost = -math.inf, math.inf
    for i in order:
        acc, cost = points[i]
        if acc > best_acc:
            front[i] = True
            best_acc, best_cost = acc, cost
        elif acc == best_acc and cost == best_cost:
            front[i] = True
    return front
