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


class _FakeCuda:
    """Just enough of torch.cuda to run the CUDA code paths on a CPU: a log of what ran where,
    events whose elapsed time is 2 ms, a graph whose replay calls what was captured."""

    def __init__(self):
        self.log, self.where = [], "default"
        fake = self

        class Stream:
            def wait_stream(self, other): pass

        class Ctx:
            def __init__(self, where): self.to = where
            def __enter__(self): self.was, fake.where = fake.where, self.to
            def __exit__(self, *exc): fake.where = self.was

        class Event:
            def __init__(self, enable_timing=False): self.at = None
            def record(self): self.at = len(fake.log)
            def synchronize(self): pass
            def elapsed_time(self, end): return 2.0

        class CUDAGraph:
            def replay(self): fake.log.append("replay")

        self.Stream, self.Event, self.CUDAGraph = Stream, Event, CUDAGraph
        self.current_stream = Stream
        self.stream = lambda s: Ctx("side")
        self.graph = lambda g: Ctx("capture")
        self.device = lambda d: Ctx(fake.where)
        self.synchronize = lambda: None

    def call(self):
        self.log.append(self.where)
        return "out"


def test_cuda_paths_capture_once_after_side_stream_warmup_and_time_by_events(monkeypatch) -> None:
    from slimbench.suite.measure import latency

    fake = _FakeCuda()
    monkeypatch.setattr(torch, "cuda", fake)
    replay, out = latency.capture_graph(fake.call, warmup=2)
    assert fake.log == ["side", "side", "capture"] and out == "out"
    replay()
    assert fake.log[-1] == "replay" and latency.cuda_event_ms(fake.call) == 2.0
    fake.log.clear()
    stats = measure_latency(fake.call, "cuda", LatencyConfig(warmup=1, min_runs=3, min_seconds=0.0, cuda_graph=True))
    assert fake.log == ["side"] * 3 + ["capture"] + ["replay"] * 4  # warm-up >= 3 before capture, 1 + 3 replays
    assert stats.runs == 3 and stats.median_ms == 2.0 and stats.device == "cuda"


def test_gpu_benchmarks_time_and_capture_with_the_suite_code(monkeypatch) -> None:
    """benchmarks/gpu_common.py holds no CUDA timing or capture of its own: it calls the suite's."""
    import importlib.util
    from pathlib import Path

    from slimbench.suite.measure import latency

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_common.py"
    spec = importlib.util.spec_from_file_location("gpu_common_under_test", path)
    gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu)
    for script in path.parent.glob("*.py"):
        text = script.read_text()
        assert "CUDAGraph(" not in text and "Event(enable_timing" not in text, script.name
    fake = _FakeCuda()
    monkeypatch.setattr(torch, "cuda", fake)
    timings = iter([3.0, 1.0, 2.0])
    monkeypatch.setattr(latency, "cuda_event_ms", lambda call: (call(), next(timings))[1])
    assert gpu.median_ms(fake.call, torch, reps=3, device="cuda", flush=False, warm=2) == 2.0
    assert fake.log == ["default"] * 5
    seen = []
    monkeypatch.setattr(latency, "capture_graph",
                        lambda fn, warmup: (seen.append((warmup, torch.is_inference_mode_enabled(), fn())), ("r", "o"))[1])
    assert gpu.capture_graph(lambda **kw: kw, {"x": 1}, torch) == ("r", "o") and seen == [(3, True, {"x": 1})]
