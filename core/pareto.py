"""The Pareto front of (accuracy, cost) points: one definition for the leaderboard's plots and
the search methods' recorded fronts. Dependency-free."""
from __future__ import annotations

import math
from typing import Sequence


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
