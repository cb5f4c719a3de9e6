"""Peak memory allocated by torch while a callable runs (activations + workspace).

What is measured is the peak of *additional* bytes held by torch's allocator during the
call, above what was already allocated when it started (so resident weights are not
included; `size.tensor_bytes` reports those).

- CUDA: `torch.cuda.max_memory_allocated` after `reset_peak_memory_stats`, minus the
  bytes allocated before the call. Exact for torch's caching allocator; memory that
  libraries allocate outside it (cuBLAS/cuDNN workspaces set up earlier) is not seen.
- CPU: torch has no peak counter for its CPU allocator, so the call runs under
  `torch.profiler` with `profile_memory=True`; every allocation/free by torch's CPU
  allocator is recorded as a `[memory]` event with a signed byte count, and the peak is
  the maximum of their running sum in time order. It covers every tensor torch allocates
  (including temporaries freed inside ops) but not memory that third-party libraries
  (oneDNN/MKL scratch, Python objects) take from malloc directly. The profiler adds
  overhead, so never time a call while measuring its memory.
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from torch.profiler import ProfilerActivity, profile


def peak_memory(fn: Callable[[], Any], device: torch.device | str) -> int:
    """Peak bytes allocated by torch during `fn()`, above the level at its start."""
    device = torch.device(device)
    if device.type == "cuda":
        return _peak_cuda(fn, device)
    if device.type == "cpu":
        return _peak_cpu(fn)
    raise ValueError(f"peak_memory does not support device type {device.type!r}")


def _peak_cuda(fn: Callable[[], Any], device: torch.device) -> int:
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return max(0, torch.cuda.max_memory_allocated(device) - before)


@contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """The profiler's C++ side prints start/stop and GPU-probe lines on fd 2 each time; hide them."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _peak_cpu(fn: Callable[[], Any]) -> int:
    with _native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    results = getattr(prof.profiler, "kineto_results", None) if prof.profiler else None
    if results is None:
        raise RuntimeError("this torch build's profiler exposes no memory events; "
                           "CPU peak memory cannot be measured")
    events = [(e.start_ns(), e.nbytes()) for e in results.events()
              if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU]
    return peak_of_running_sum(events)


def peak_of_running_sum(events: list[tuple[int, int]]) -> int:
    """Max over time of the cumulative sum of signed byte deltas `(time, nbytes)`.

    Events are ordered by time (stable, so simultaneous events keep recorded order);
    frees of memory allocated before the call can make the sum negative, and the peak
    is never reported below 0.
    """
    level = peak = 0
    for _, nbytes in sorted(events, key=lambda e: e[0]):
        level += nbytes
        peak = max(peak, level)
    return peak
