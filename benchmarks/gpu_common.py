"""What the GPU kernel benchmarks share: the median of CUDA-event timings with an L2 flush, CUDA-graph
capture of a model, their start-up (the --smoke guard, the device check, the slimbench shim) and the
record's file name.

The event timer and the capture are the suite's own (`suite.measure.latency`), so the benchmarks
time as the harness does; they are imported inside the functions, after `start` has made `slimbench`
importable on a machine where it is not installed."""
from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path


def rel_err(out, ref) -> float:
    """Max abs error relative to the reference's max magnitude."""
    return float((out.float() - ref.float()).abs().max() / ref.float().abs().max().clamp(min=1e-12))


def median_ms(fn, torch, reps: int, device: str, flush: bool = True, warm: int = 10) -> float:
    """Median ms of `fn` over `reps` CUDA-event-timed calls after `warm` untimed ones, L2 flushed
    before each call if asked (small weights would otherwise sit in L2 and look free). On the CPU
    (--smoke) one wall-clock call after one warm-up: the code path, not a number. The event
    timer is the suite's (`suite.measure.latency`), imported after `start` has made it importable."""
    if device == "cpu":
        fn()
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3
    from slimbench.suite.measure.latency import cuda_event_ms

    cache = torch.empty(256 << 20, dtype=torch.int8, device=device) if flush else None
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        if cache is not None:
            cache.zero_()
        times.append(cuda_event_ms(fn))
    return sorted(times)[len(times) // 2]


def capture_graph(model, inputs: dict, torch):
    """One forward captured as a CUDA graph (`suite.measure.latency.capture_graph`, three warm-up
    calls, in inference mode); returns (replay, static output)."""
    from slimbench.suite.measure.latency import capture_graph as capture

    with torch.inference_mode():
        return capture(lambda: model(**inputs), warmup=3)


def start(tool: str, smoke: bool, torch) -> tuple[str | None, int]:
    """(device name, 0) when the script can run here, else (None, exit code) after saying why.
    Makes `slimbench` importable where it is not installed (the GPU machine)."""
    if smoke:
        if os.environ.get("TRITON_INTERPRET") != "1":
            print(f"{tool} --smoke: set TRITON_INTERPRET=1 in the environment (before Python starts)")
            return None, 2
    elif not torch.cuda.is_available():
        print(f"{tool}: no CUDA device here; run this on the GPU machine. Nothing was measured.")
        return None, 0
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from e2e_bert_w8a8 import import_slimbench  # the one shim the GPU scripts share
    import_slimbench()
    return ("cpu-smoke" if smoke else torch.cuda.get_device_name()), 0


def record_path(out_dir: str, prefix: str, device: str) -> Path:
    """`<out_dir>/<prefix>-<device slug>.json`, its folder made."""
    out = Path(out_dir) / f"{prefix}-{re.sub(r'[^a-z0-9]+', '-', device.lower()).strip('-')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    return out
