"""The cost table: measured latency and FLOPs per architecture, cached per device.

Hardware-aware search needs a candidate's latency before it is trained (a constraint decides
whether it is trained at all). The table measures an architecture once, with the suite's own
latency harness on the run's device and `torch.utils.flop_counter`, and keeps it in a JSON file
per device, torch version, thread count and timing protocol (all recorded in the file's
`provenance`), so a later search on the same machine reads it instead of timing again. Keys
are scoped by the task definition: the same child of another task is another entry.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

PROTOCOL = {"warmup": 2, "min_runs": 5, "min_seconds": 0.2, "max_seconds": 2.0}


class CostTable:
    """`table(key, model, inputs) -> {"latency_ms", "mflops", "cached"}`; `path=None` keeps it in memory."""

    def __init__(self, device: str, scope: str, path_dir: Path | None = None, threads: int | None = None,
                 device_label: str = ""):
        import torch

        self.device, self.scope = torch.device(device), scope
        self.threads = threads or torch.get_num_threads()
        self.provenance = {"device": device_label or str(self.device), "torch": torch.__version__,
                           "threads": self.threads, "protocol": PROTOCOL,
                           "statistic": "median of timed calls (suite latency harness)"}
        blob = json.dumps(self.provenance, sort_keys=True)
        slug = re.sub(r"[^A-Za-z0-9]+", "-", self.provenance["device"]).strip("-")[:60] or "device"
        self.path = (path_dir / f"{slug}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}.json"
                     if path_dir is not None else None)
        self._entries: dict[str, dict[str, Any]] | None = None
        self.measured = self.hits = 0

    @property
    def entries(self) -> dict[str, dict[str, Any]]:
        """The cached costs, read on first use (every run gets a table; only searches read it)."""
        if self._entries is None:
            self._entries = {}
            if self.path is not None and self.path.exists():
                try:
                    self._entries = json.loads(self.path.read_text()).get("entries", {})
                except (OSError, ValueError):
                    self._entries = {}  # a torn file is re-measured, never trusted
        return self._entries

    def __call__(self, key: str, model: "nn.Module", inputs: dict[str, "torch.Tensor"]) -> dict[str, Any]:
        batch = next(iter(inputs.values())).shape[0]
        full = f"{self.scope}|{key}|b{batch}"
        if full in self.entries:
            self.hits += 1
            return {**self.entries[full], "cached": True}
        entry = self._measure(model, inputs)
        entry["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.entries[full] = entry
        self.measured += 1
        self._save()
        return {**entry, "cached": False}

    def _measure(self, model: "nn.Module", inputs: dict[str, "torch.Tensor"]) -> dict[str, Any]:
        import torch

        from slimbench.suite.measure.flops import count_flops
        from slimbench.suite.measure.latency import LatencyConfig, measure_latency

        was_training = model.training
        model.eval()
        try:
            x = {k: v.to(self.device) for k, v in inputs.items()}
            flops = count_flops(model, {k: v[:1] for k, v in x.items()})["effective"]
            with torch.no_grad():
                stats = measure_latency(lambda: model(**x), self.device,
                                        LatencyConfig(threads=self.threads, **PROTOCOL))
        finally:
            model.train(was_training)
        return {"latency_ms": round(stats.median_ms, 4), "mflops": round(flops / 1e6, 4)}

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"provenance": self.provenance, "entries": self.entries}, indent=1))
        os.replace(tmp, self.path)  # atomic: a killed run never leaves half a table

    def summary(self) -> dict[str, Any]:
        """What the run records about the table it used."""
        return {"path": str(self.path) if self.path else None, "measured": self.measured, "cached": self.hits,
                "provenance": self.provenance}
