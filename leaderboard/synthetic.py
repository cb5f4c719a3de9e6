"""Synthetic run.json records following the run record schema (slimbench.core.record).

For the build benchmark (1,000 runs without training anything) and for tests and demos
of the leaderboard; nothing here is ever mixed with real results.
"""
from __future__ import annotations

import hashlib
import random
import shlex
from typing import Any

_METHODS = (("quant.minmax", "quantization", {"bits": (8, 6, 4, 3, 2)}),
            ("quant.fakequant", "quantization", {"bits": (8, 6, 4, 3, 2)}),
            ("prune.magnitude", "pruning", {"sparsity": (0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)}),
            ("prune.structured", "pruning", {"ratio": (0.1, 0.25, 0.4, 0.5, 0.6)}),
            ("distill.kd", "distillation", {"width": (0.75, 0.5, 0.375, 0.25)}),
            ("lowrank.svd", "low-rank", {"rank": (4, 8, 16, 32, 64, 128)}),
            ("nas.random", "nas", {"budget": (10, 20, 40, 80)}))


def fake_run(task: str = "toy-vision", method: str = "baseline", family: str = "reference",
             config: dict[str, Any] | None = None, seed: int = 0, *, accuracy: float | None = 0.9,
             size_bytes: float = 4_000_000, flops: float = 1e8, latency_ms: float = 2.0,
             status: str = "FINISHED", simulated: bool = False, device: str = "cpu",
             device_name: str = "Test CPU", profile: str = "quick", label: str | None = None,
             description: str = "", batch_sizes: tuple[int, ...] = (1, 64), error: str | None = None,
             run_id: str | None = None) -> dict[str, Any]:
    """One complete run.json; latency grows linearly with the batch size."""
    config = dict(config or {})
    label = label if label is not None else " ".join([method, *(f"{k}={v}" for k, v in config.items())])
    key = hashlib.sha1(repr((task, profile, method, sorted(config.items()), seed, device)).encode()).hexdigest()
    finished = status == "FINISHED"
    spec = method + (":" + ",".join(f"{k}={v}" for k, v in config.items()) if config else "")
    return {
        "schema": 1, "run_key": key[:16], "status": status,
        "command": f"slimbench run --tasks {task} --method {shlex.quote(spec)} --seed {seed} "
                   f"--profile {profile} --device {device}",
        "invocation": "slimbench run --synthetic",
        "task": {"name": task, "kind": "vision", "metric": "accuracy", "profile": profile, "num_classes": 10},
        "method": {"name": method, "family": family, "label": label, "description": description,
                   "simulated": simulated, "config": {"version": 1, **config}},
        "seed": seed, "device": {"type": device, "name": device_name, "threads": 2},
        "baseline": {"key": hashlib.sha1(repr((task, profile)).encode()).hexdigest()[:16]},  # the task definition
        "metrics": ({"accuracy": accuracy, "balanced_accuracy": accuracy, "size_bytes": size_bytes,
                     "params_total": size_bytes / 4, "params_nonzero": size_bytes / 4, "flops_dense": flops,
                     "flops_effective": flops * 0.8, "weights_bytes": size_bytes * 0.98} if finished else {}),
        "latency": ([{"device": device, "batch_size": b, "median_ms": latency_ms * b ** 0.8,
                      "p90_ms": latency_ms * b ** 0.8 * 1.1, "mean_ms": latency_ms * b ** 0.8 * 1.02,
                      "std_ms": latency_ms * 0.05, "runs": 50, "threads": 2} for b in batch_sizes]
                    if finished else []),
        "memory": ([{"device": device, "batch_size": b, "peak_bytes": size_bytes * 2 + b * 1e5}
                    for b in batch_sizes] if finished else []),
        "provenance": {"git_commit": "0" * 40, "slimbench": "0.1.0", "torch": "2.4.0", "cuda": None,
                       "device_name": device_name, "cpu_model": device_name, "threads": 2,
                       "python": "3.11", "platform": "linux", "mlflow_run_id": run_id or key,
                       "started": f"2026-01-01T00:{seed % 60:02d}:00+00:00", "duration_s": 12.5},
        "error": error if error is not None else (None if finished else "RuntimeError: synthetic failure"),
    }


def synthetic_runs(n: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    """`n` varied runs: 4 tasks x 2 devices x many configurations x 3 seeds, ~3% failed.

    Configurations of `quant.fakequant` are marked simulated, as a fake-quant plugin would be.
    """
    rng = random.Random(seed)
    configs: list[tuple[str, str, dict[str, Any]]] = [("baseline", "reference", {})]
    for name, family, grid in _METHODS:
        (field, values), = grid.items()
        configs += [(name, family, {field: v}) for v in values]
    runs: list[dict[str, Any]] = []
    cells = [(t, d) for t in ("toy-vision", "toy-text", "cifar10-resnet18", "sst2-minilm")
             for d in ("cpu", "cuda")]
    i = 0
    while len(runs) < n:
        task, device = cells[(i // (len(configs) * 3)) % len(cells)]
        name, family, cfg = configs[(i // 3) % len(configs)]
        rep = i // (len(cells) * len(configs) * 3)  # past one full pass: new seeds
        s = i % 3 + 3 * rep
        shrink = 1.0 + rng.random() * 7 if name != "baseline" else 1.0
        runs.append(fake_run(
            task, name, family, cfg, s, accuracy=0.9 - 0.02 * (shrink - 1) / 7 * rng.random() + rng.gauss(0, 0.004),
            size_bytes=4e7 / shrink, flops=2e9 / shrink ** 0.5, latency_ms=(3.0 if device == "cpu" else 0.4)
            / shrink ** 0.4 * (1 + 0.05 * rng.random()),
            status="FAILED" if rng.random() < 0.03 else "FINISHED", simulated=name == "quant.fakequant",
            device=device, device_name="Synthetic CPU" if device == "cpu" else "Synthetic GPU",
            description=f"synthetic {family} method", run_id=f"synthetic-{i:05d}"))
        i += 1
    return runs
