"""Peak memory on CPU: a known allocation is seen, and not double counted."""
from __future__ import annotations

import torch

from slimbench.suite.measure.memory import peak_memory, peak_of_running_sum

MIB = 1 << 20


def test_running_sum_peak() -> None:
    assert peak_of_running_sum([(3, -5), (1, 10), (2, 4), (4, 2)]) == 14
    assert peak_of_running_sum([(1, -8)]) == 0
    assert peak_of_running_sum([]) == 0


def test_cpu_peak_sees_known_allocation() -> None:
    def fn() -> float:
        big = torch.ones(16 * MIB, dtype=torch.float32)  # 64 MiB
        return float(big[0])

    peak = peak_memory(fn, "cpu")
    assert 64 * MIB <= peak < 128 * MIB


def test_cpu_peak_counts_simultaneous_tensors() -> None:
    def fn() -> float:
        a = torch.ones(8 * MIB)  # 32 MiB
        b = a * 2  # another 32 MiB while a is alive
        del a
        c = b + 1  # b alive, a freed: still 64 MiB
        return float(c[0])

    peak = peak_memory(fn, "cpu")
    assert 64 * MIB <= peak < 96 * MIB
