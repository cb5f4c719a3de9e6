"""The run record: everything one run measured, typed, and the one way it is read back.

The harness builds a `RunRecord` per run and writes `record.to_dict()` as the run's
`run.json`; `slimbench results`, the leaderboard and the tests read runs back through
`RunRecord.from_dict` (which also upgrades schema-1 records), so there is one schema, here.

Schema 2 (`run.json`):
    {"schema": 2, "run_key", "status" (RUNNING | FINISHED | FAILED | UNSUPPORTED | KILLED),
     "command" (reproduces this one run), "invocation",
     "task": {"name", "kind", "metric", "profile", "num_classes"},
     "method": {"name", "family", "label", "description", "simulated", "version" (algorithm),
                "config": {...}, "spec", "config_files": {path: verbatim text}},
     "seed", "device": {"type", "name", "threads", "capability": {"isa", "flags"} | {"compute_capability"},
                "also": [{"type", "name", "capability"}] (the other devices latency was timed on),
                "compile": "" (eager) | "default" (latency timed on torch.compile(model), that mode)},
     "baseline": {"key", "steps", "train_seconds", "source" and "checkpoint" (published weights: ref,
                  repository, revision, sha256 of each file)},
     "metrics": {<task.metric> ("accuracy" with "balanced_accuracy", or "perplexity" with "nll",
                 "token_accuracy", "eval_tokens"), "eval_examples", "size_bytes", "tensors_bytes",
                 "meta_bytes", "index_bytes", "params_total", "params_nonzero", "weights_bytes",
                 "sparsity", "weights_counted", "flops_dense", "flops_effective", "bops",
                 "compress_seconds"},
     "sparsity_layers": {layer: share of zeros in the weight it computes with} (measured),
     "method_metrics": {...what the method reported: its own sparsity, ranks, search cost...},
     "budget": {"finetune": {"used", "budget"}, "search": {"used", "budget"}},
     "latency": [{"device", "device_name", "batch_size", "median_ms", "p90_ms", "mean_ms", "std_ms",
                  "runs", "threads", "dtype", "graph" (CUDA: replayed as one captured CUDA graph)}],
     "memory": [{"device", "device_name", "batch_size", "peak_bytes", "dtype"}],
     "latency_unsupported": {device: reason, "<device> graph": why capture failed}, "warnings": [...],
     "execution_paths": {device: {layer: the kernel it ran, "reference: ..." where slimbench has none}},
     "provenance": {"git_commit", "slimbench", "torch", "cuda", "device_name", "cpu_model",
                    "threads", "python", "platform", "mlflow_run_id", "started", "duration_s"},
     "error": str | null}
FLOPs and BOPs are per forward pass at batch size 1. Torch-free.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

SCHEMA = 2
FINAL_STATUSES = ("FINISHED", "FAILED", "UNSUPPORTED", "KILLED")
# The prefix of an `execution_paths` label for a path slimbench keeps for correctness, not speed
# (dequantize + dense every call...): a latency over such a path measures a missing kernel.
REFERENCE_PATH = "reference: "


def _pick(cls: type, d: Any) -> dict[str, Any]:
    """The keys of mapping `d` that are fields of dataclass `cls` (tolerates any input)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in d.items() if k in names and v is not None} if isinstance(d, dict) else {}


@dataclass
class TaskRef:
    name: str = "?"
    kind: str = ""
    metric: str = "accuracy"
    profile: str = ""
    num_classes: int | None = None


@dataclass
class MethodRef:
    name: str = "?"
    family: str = ""
    label: str = ""
    description: str = ""
    simulated: bool = False
    version: int = 1
    config: dict[str, Any] = field(default_factory=dict)
    spec: str = ""
    config_files: dict[str, str] = field(default_factory=dict)


@dataclass
class DeviceRef:
    """The device a run compressed and evaluated on, (`also`) the other devices its latency was
    timed on (a CUDA run times the host CPU too, so the CPU is part of what it measured), and
    (`compile`) whether its latency was timed on the torch.compile'd model: a compiled row is
    compared only with compiled rows, so the mode belongs to what makes two timings comparable."""

    type: str = "?"
    name: str = ""
    threads: int | None = None
    capability: dict[str, Any] = field(default_factory=dict)
    also: list[dict[str, Any]] = field(default_factory=list)
    compile: str = ""

    @property
    def label(self) -> str:
        return device_label(dataclasses.asdict(self))


@dataclass
class LatencyPoint:
    device: str
    batch_size: int
    median_ms: float
    p90_ms: float
    mean_ms: float | None = None
    std_ms: float | None = None
    runs: int | None = None
    threads: int | None = None
    dtype: str | None = None
    device_name: str = ""
    graph: bool = False  # CUDA: timed as replays of one captured CUDA graph (no launch overhead)

    @property
    def where(self) -> str:
        """`cpu`, `cuda`, or `cuda-graph`: a graph replay and an eager call are different rows."""
        return f"{self.device}-graph" if self.graph else self.device


@dataclass
class MemoryPoint:
    device: str
    batch_size: int
    peak_bytes: int
    dtype: str | None = None
    device_name: str = ""


@dataclass
class RunRecord:
    """One run, as tracked. Build it with the fields known at start; fill the rest as measured."""

    run_key: str
    task: TaskRef
    method: MethodRef
    seed: Any
    device: DeviceRef
    status: str = "RUNNING"
    command: str | None = ""
    invocation: str = ""
    baseline: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    method_metrics: dict[str, Any] = field(default_factory=dict)
    sparsity_layers: dict[str, float] = field(default_factory=dict)  # measured by the suite, per weight layer
    budget: dict[str, dict[str, int]] = field(default_factory=dict)
    latency: list[LatencyPoint] = field(default_factory=list)
    memory: list[MemoryPoint] = field(default_factory=list)
    latency_unsupported: dict[str, str] = field(default_factory=dict)
    execution_paths: dict[str, dict[str, str]] = field(default_factory=dict)  # device -> layer -> path
    warnings: list[str] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    schema: int = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunRecord":
        """Read a run.json of any schema; missing or mistyped parts get their defaults."""
        d = d if isinstance(d, dict) else {}

        def points(kind: type, key: str) -> list:
            out = []
            for e in d.get(key) or []:
                try:
                    out.append(kind(**_pick(kind, e)))
                except TypeError:  # a point missing a required field: not a measurement
                    continue
            return out

        seed = d.get("seed")
        return cls(
            run_key=str(d.get("run_key") or ""), task=TaskRef(**_pick(TaskRef, d.get("task"))),
            method=MethodRef(**_pick(MethodRef, d.get("method"))), seed=seed,
            device=DeviceRef(**_pick(DeviceRef, d.get("device"))),
            status=str(d.get("status") or "FAILED"), command=d.get("command"),
            invocation=str(d.get("invocation") or ""),
            baseline=dict(d.get("baseline") or {}), metrics=dict(d.get("metrics") or {}),
            method_metrics=dict(d.get("method_metrics") or {}),
            sparsity_layers=dict(d.get("sparsity_layers") or {}), budget=dict(d.get("budget") or {}),
            latency=points(LatencyPoint, "latency"), memory=points(MemoryPoint, "memory"),
            latency_unsupported=dict(d.get("latency_unsupported") or {}),
            execution_paths={k: dict(v) for k, v in (d.get("execution_paths") or {}).items() if isinstance(v, dict)},
            warnings=list(d.get("warnings") or []), provenance=dict(d.get("provenance") or {}),
            error=d.get("error"), schema=SCHEMA)

    @property
    def quality(self) -> float | None:
        """The value of the task's metric (`metrics[task.metric]`: accuracy, perplexity...); its
        direction is `core.metrics.get_metric(task.metric)`."""
        v = self.metrics.get(self.task.metric or "accuracy")
        return float(v) if _is_number(v) else None

    def flat_metrics(self) -> dict[str, float]:
        """The numbers MLflow shows as metrics: measurements, latency/memory points, budget use
        and the method's own numeric figures (`method.<name>`)."""
        out = {k: float(v) for k, v in self.metrics.items() if _is_number(v)}
        for p in self.latency:
            prefix = f"latency_{p.where.replace('-', '_')}_bs{p.batch_size}"
            out[f"{prefix}_median_ms"], out[f"{prefix}_p90_ms"] = p.median_ms, p.p90_ms
        for m in self.memory:
            out[f"memory_{m.device}_bs{m.batch_size}_peak_bytes"] = float(m.peak_bytes)
        for account, b in self.budget.items():
            out[f"steps_{account}_used"], out[f"steps_{account}_budget"] = float(b["used"]), float(b["budget"])
            if "candidates" in b:
                out[f"{account}_candidates"] = float(b["candidates"])
        for k, v in self.method_metrics.items():
            if _is_number(v):
                out[f"method.{k}"] = float(v)
        return out


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


_NOTABLE_FLAGS = (("VNNI", ("avx512_vnni", "avx_vnni")), ("AMX", ("amx_tile",)),
                  ("BF16", ("avx512_bf16", "amx_bf16")))


def capability_text(capability: dict[str, Any] | None) -> str:
    """'AVX2', 'AVX512 VNNI BF16', 'sm_90': what decides which kernels a device can run."""
    cap = capability or {}
    if cap.get("compute_capability"):
        return "sm_" + str(cap["compute_capability"]).replace(".", "")
    parts = [str(cap["isa"])] if cap.get("isa") else []
    flags = set(cap.get("flags") or ())
    parts += [word for word, names in _NOTABLE_FLAGS if flags & set(names)]
    return " ".join(parts)


def device_label(device: dict[str, Any] | None) -> str:
    """`cpu (AMD EPYC 7B13 · AVX2)`, or `cuda (NVIDIA H200 · sm_90) + cpu (...)` when latency was also
    timed on the host CPU, then ` · torch.compile` when timed compiled: latency is comparable only on
    the same hardware and instruction set, in the same mode."""
    device = device if isinstance(device, dict) else {}
    others = [d for d in device.get("also") or [] if isinstance(d, dict)]
    mode = str(device.get("compile") or "")
    suffix = "" if not mode else " · torch.compile" + ("" if mode == "default" else f"({mode})")
    return " + ".join([_one_label(device), *(_one_label(d) for d in others)]) + suffix


def _one_label(device: dict[str, Any]) -> str:
    kind = str(device.get("type") or "?")
    name = str(device.get("name") or "")
    detail = " · ".join(p for p in (name if name != kind else "", capability_text(device.get("capability"))) if p)
    return f"{kind} ({detail})" if detail else kind


def latest_per_key(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep the newest record per `run_key`: a `--force` re-run or a retry after a failure
    replaces the older run instead of counting as another seed (input order kept)."""
    newest: dict[str, int] = {}
    for i, r in enumerate(records):
        key, started = r.get("run_key"), str((r.get("provenance") or {}).get("started") or "")
        if key and (key not in newest or started > str((records[newest[key]].get("provenance") or {}).get("started")
                                                        or "")):
            newest[key] = i
    keep = set(newest.values())
    return [r for i, r in enumerate(records) if not r.get("run_key") or i in keep]
