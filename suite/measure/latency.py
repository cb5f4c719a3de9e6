"""Wall-clock latency of one call, with a fixed protocol so numbers are comparable.

Protocol: `warmup` untimed calls, then timed calls until at least `min_runs` calls AND at
least `min_seconds` of timed work have been done, stopping early once `max_seconds` is
reached (whichever limit hits first wins over the minimums; at least one call is timed).

- CPU: the intra-op thread count is pinned with `torch.set_num_threads` for the whole
  measurement (and restored after), each call timed with `time.perf_counter`.
- CUDA: each call is bracketed by CUDA events and synchronized, so the time is the GPU
  time of the call including launch gaps; optionally the call is captured once into a
  CUDA graph and replayed, which removes Python/launch overhead (the callable must then
  be graph-capturable: static shapes, no host syncs).
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch


@dataclass(frozen=True)
class LatencyConfig:
    """How long and how to time; recorded with the result so the protocol is known."""

    warmup: int = 5
    min_runs: int = 10
    min_seconds: float = 1.0
    max_seconds: float = 30.0
    threads: int | None = None  # CPU intra-op threads; None = keep torch's current setting
    cuda_graph: bool = False

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.min_runs < 1:
            raise ValueError("LatencyConfig needs warmup >= 0 and min_runs >= 1")
        if self.min_seconds < 0 or self.max_seconds <= 0:
            raise ValueError("LatencyConfig needs min_seconds >= 0 and max_seconds > 0")
        if self.threads is not None and self.threads < 1:
            raise ValueError("LatencyConfig.threads must be >= 1 (or None)")


@dataclass(frozen=True)
class LatencyStats:
    """Summary of the timed calls, in milliseconds."""

    median_ms: float
    p90_ms: float
    mean_ms: float
    std_ms: float
    runs: int
    threads: int
    device: str

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def percentile(sorted_samples: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default 'linear' method); q in [0, 100]."""
    if not sorted_samples:
        raise ValueError("percentile of no samples")
    pos = (len(sorted_samples) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_samples) - 1)
    return sorted_samples[lo] + (sorted_samples[hi] - sorted_samples[lo]) * (pos - lo)


def summarize(samples_ms: list[float]) -> dict[str, float | int]:
    """median, p90, mean, std (sample std, n-1; 0 for one sample) and run count."""
    if not samples_ms:
        raise ValueError("no latency samples")
    s = sorted(samples_ms)
    n = len(s)
    mean = sum(s) / n
    var = sum((x - mean) ** 2 for x in s) / (n - 1) if n > 1 else 0.0
    return {"median_ms": percentile(s, 50), "p90_ms": percentile(s, 90),
            "mean_ms": mean, "std_ms": math.sqrt(var), "runs": n}


def _keep_going(runs: int, elapsed: float, cfg: LatencyConfig) -> bool:
    if runs == 0:
        return True
    if elapsed >= cfg.max_seconds:
        return False
    return runs < cfg.min_runs or elapsed < cfg.min_seconds


def _time_cpu(fn: Callable[[], Any], cfg: LatencyConfig) -> list[float]:
    for _ in range(cfg.warmup):
        fn()
    samples: list[float] = []
    elapsed = 0.0
    while _keep_going(len(samples), elapsed, cfg):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        elapsed += dt
        samples.append(dt * 1e3)
    return samples


def capture_graph(fn: Callable[[], Any], warmup: int = 3) -> tuple[Callable[[], Any], Any]:
    """`fn()` captured once as a CUDA graph: (replay, the static output each replay overwrites).

    The `warmup` calls run on a side stream first: capture requires it, and they compile Triton
    kernels and settle the allocator. The one capture code, shared with benchmarks/gpu_common.py."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph.replay, out


def cuda_event_ms(call: Callable[[], Any], events: tuple[Any, Any] | None = None) -> float:
    """GPU time of one `call()` in ms between two CUDA events (launch gaps included), waited for.
    `events`: a (start, end) pair to reuse. The one event timer, shared with benchmarks/gpu_common.py."""
    start, end = events or (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
    start.record()
    call()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def _time_cuda(fn: Callable[[], Any], device: torch.device, cfg: LatencyConfig) -> list[float]:
    with torch.cuda.device(device):
        call = capture_graph(fn, max(cfg.warmup, 3))[0] if cfg.cuda_graph else fn
        for _ in range(cfg.warmup):
            call()
        torch.cuda.synchronize()
        samples: list[float] = []
        elapsed = 0.0
        events = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        while _keep_going(len(samples), elapsed, cfg):
            ms = cuda_event_ms(call, events)
            elapsed += ms / 1e3
            samples.append(ms)
        return samples


def measure_latency(fn: Callable[[], Any], device: torch.device | str,
                    cfg: LatencyConfig | None = None) -> LatencyStats:
    """Time `fn()` (which should run one forward pass) under the protocol above."""
    cfg = cfg or LatencyConfig()
    device = torch.device(device)
    saved_threads = torch.get_num_threads()
    threads = cfg.threads or saved_threads
    try:
        torch.set_num_threads(threads)
        if device.type == "cuda":
            samples = _time_cuda(fn, device, cfg)
        else:
            samples = _time_cpu(fn, cfg)
    finally:
        torch.set_num_threads(saved_threads)
    stats = summarize(samples)
    return LatencyStats(median_ms=float(stats["median_ms"]), p90_ms=float(stats["p90_ms"]),
                        mean_ms=float(stats["mean_ms"]), std_ms=float(stats["std_ms"]),
                        runs=int(stats["runs"]), threads=threads, device=str(device))
