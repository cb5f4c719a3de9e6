"""Latency protocol: exact summary stats, timing of a known sleep, thread pinning."""
from __future__ import annotations

import time

import pytest
import torch

from slimbench.suite.measure.latency import LatencyConfig, measure_latency, percentile, summarize


def test_summarize_exact() -> None:
    stats = summarize([4.0, 1.0, 3.0, 2.0, 5.0])
    assert stats == {"median_ms": 3.0, "p90_ms": pytest.approx(4.6), "mean_ms": 3.0,
                     "std_ms": pytest.approx(2.5 ** 0.5), "runs": 5}
    even = summarize([10.0, 20.0])
    assert even["median_ms"] == 15.0 and even["p90_ms"] == pytest.approx(19.0)
    assert summarize([7.0]) == {"median_ms": 7.0, "p90_ms": 7.0, "mean_ms": 7.0, "std_ms": 0.0, "runs": 1}
    assert percentile(list(map(float, range(11))), 90) == pytest.approx(9.0)
    with pytest.raises(ValueError):
        summarize([])


def test_sleep_median_close_to_sleep() -> None:
    cfg = LatencyConfig(warmup=1, min_runs=8, min_seconds=0.0, max_seconds=5.0)
    stats = measure_latency(lambda: time.sleep(0.02), "cpu", cfg)
    assert stats.runs == 8 and stats.device == "cpu"
    assert 19.5 <= stats.median_ms < 35.0
    assert stats.p90_ms >= stats.median_ms


def test_min_seconds_and_max_seconds() -> None:
    slow = measure_latency(lambda: time.sleep(0.01), "cpu",
                           LatencyConfig(warmup=0, min_runs=1, min_seconds=0.1, max_seconds=5.0))
    assert slow.runs >= 8  # kept going until 0.1 s of timed work
    capped = measure_latency(lambda: time.sleep(0.01), "cpu",
                             LatencyConfig(warmup=0, min_runs=1000, min_seconds=0.0, max_seconds=0.05))
    assert 1 <= capped.runs <= 6  # max_seconds beats min_runs


def test_threads_pinned_then_restored() -> None:
    before = torch.get_num_threads()
    seen: list[int] = []
    stats = measure_latency(lambda: seen.append(torch.get_num_threads()), "cpu",
                            LatencyConfig(warmup=1, min_runs=2, min_seconds=0.0, threads=1))
    assert set(seen) == {1} and stats.threads == 1
    assert torch.get_num_threads() == before
    default = measure_latency(lambda: None, "cpu", LatencyConfig(warmup=0, min_runs=1, min_seconds=0.0))
    assert default.threads == before


def test_bad_config_rejected() -> None:
    with pytest.raises(ValueError):
        LatencyConfig(min_runs=0)
