"""Measure one artifact: reload it from its bytes, then accuracy, size, parameters, sparsity,
FLOPs, BOPs, latency and memory.

Everything is measured on the model reloaded from the artifact's bytes onto a freshly built
model, never on the object the method returned, and (through `isolated.MeasureWorker`) in a
process that never ran the method's `compress`, so a method cannot report a size, a speed or an
accuracy its bytes do not deliver. Accuracy is measured on the test split, here and nowhere else.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from slimbench.core.record import LatencyPoint, MemoryPoint, RunRecord
from slimbench.suite.progress import ProgressConfig, bar


def quality_metrics(result: dict) -> dict:
    """The evaluator's result as run-record metrics: `accuracy` and `balanced_accuracy`, or
    `perplexity`, `nll`, `token_accuracy` and `eval_tokens`; `eval_examples` (items or windows)."""
    keys = ("perplexity", "nll", "token_accuracy") if "perplexity" in result else ("accuracy", "balanced_accuracy")
    out = {k: result[k] for k in keys}
    if "tokens" in result:
        out["eval_tokens"] = result["tokens"]
    out["eval_examples"] = result["n"]
    return out


def measure_artifact(task, method, artifact_dir: Path, *, record: RunRecord, device: str,
                     latency_devices: tuple[str, ...], threads: int,
                     latency_profile: tuple[int, int, float, float], progress: ProgressConfig,
                     compile_mode: str = "", since: float | None = None) -> torch.nn.Module:
    """Fill `record` (metrics, sparsity per layer, latency, memory, warnings) from the artifact in
    `artifact_dir`; returns the reloaded model. `since`: when the run began; with it, the restore
    runs under the file audit (`audit.FileAudit`) and an artifact that is not self-contained fails."""
    import functools

    from slimbench.suite.artifact import count_params, index_names, load_artifact, read_artifact, stored_params
    from slimbench.suite.measure.accuracy import evaluate
    from slimbench.suite.measure.audit import FileAudit
    from slimbench.suite.measure.flops import count_flops
    from slimbench.suite.measure.size import artifact_size, tensor_bytes
    from slimbench.suite.measure.sparsity import measure_sparsity

    artifact_dir = Path(artifact_dir)
    guard = None if since is None else functools.partial(FileAudit, artifact_dir, since)
    model = load_artifact(artifact_dir, task.build_model, method, guard=guard).eval()
    tensors, doc = read_artifact(artifact_dir)
    m = record.metrics
    files = [artifact_dir / "model.safetensors", artifact_dir / "model.json"]
    m["tensors_bytes"], m["meta_bytes"] = artifact_size(files[:1]), artifact_size(files[1:])
    m["size_bytes"] = m["tensors_bytes"] + m["meta_bytes"]
    indices = index_names(model)
    m["index_bytes"] = sum(t.numel() * t.element_size() for k, t in tensors.items()
                           if k in indices and k not in doc.get("aliases", {}))
    m["params_total"], m["params_nonzero"] = count_params(model)
    stored = stored_params(artifact_dir, model)
    if stored != (m["params_total"], m["params_nonzero"]):
        record.warnings.append(f"the reloaded model holds (total, nonzero) = {(m['params_total'], m['params_nonzero'])} "
                               f"weights, the artifact stores {stored}: its restore made weights the bytes do not hold")
    meta = doc.get("meta") or {}
    for key in ("params_total", "params_nonzero"):  # a method's own (logical) count: beside ours, never instead
        if key in meta:
            record.method_metrics.setdefault(key, meta[key])
    del tensors

    model.to(device)
    with torch.inference_mode():  # one forward first: a layer that expands its weight on first use holds it now
        model(**{k: v.to(device) for k, v in task.example_inputs(1).items()})
    m["weights_bytes"] = tensor_bytes(model)
    limit = task.config.eval_limit
    total = limit or _maybe_len(task.data().test)
    with bar(f"{task.name} eval", total, progress, unit="ex") as update:
        quality = evaluate(model, task.test_batches(), torch.device(device), progress=update,
                           metric=task.config.metric)
    m.update(quality_metrics(quality))

    model.to("cpu")
    flops = count_flops(model, task.example_inputs(1), getattr(torch, compute_dtype(model)))
    m["flops_dense"], m["flops_effective"], m["bops"] = flops["dense"], flops["effective"], flops["bops"]
    sparsity = measure_sparsity(model)
    m["sparsity"] = round(sparsity["sparsity"], 6)
    m["weights_counted"] = sparsity["weights"]
    record.sparsity_layers = sparsity["layers"]

    if latency_devices:
        _time_all(task, method, model, record, latency_devices, threads, latency_profile, progress, compile_mode)
    return model


def _maybe_len(ds) -> int | None:
    try:
        return len(ds)
    except TypeError:
        return None


def _time_all(task, method, model, record, latency_devices, threads, profile, progress, compile_mode="") -> None:
    """Latency and peak memory per (device, batch). On CUDA each batch is timed twice: as eager
    calls and as replays of one captured CUDA graph (what a deployment without Python overhead
    sees); a model that cannot be captured keeps its eager number and records why. With
    `compile_mode`, every timing is of `torch.compile(model, mode=...)`."""
    from slimbench.suite.measure.latency import LatencyConfig, measure_latency
    from slimbench.suite.measure.memory import peak_memory
    from slimbench.suite.measure.paths import execution_paths
    from slimbench.suite.provenance import device_name

    warmup, min_runs, min_s, max_s = profile
    dtype = compute_dtype(model)
    points = [(d, bs) for d in latency_devices for bs in task.config.latency_batch_sizes]
    with bar(f"{task.name} latency", len(points), progress, unit="cfg") as update:
        for dev in latency_devices:
            reason = method.supports(task.spec(), dev)
            if reason:
                record.latency_unsupported[dev] = reason
                update(len(task.config.latency_batch_sizes))
                continue
            kind = dev.split(":")[0]
            model.to(dev)
            record.execution_paths[kind] = execution_paths(model, dev, getattr(torch, dtype))
            timed = compiled(model, compile_mode)
            for i, bs in enumerate(task.config.latency_batch_sizes):
                inputs = {k: v.to(dev) for k, v in task.example_inputs(bs).items()}

                def call(inputs=inputs):
                    with torch.inference_mode():
                        return timed(**inputs)

                def point(stats, graph: bool) -> LatencyPoint:
                    return LatencyPoint(
                        device=kind, device_name=device_name(dev), batch_size=bs, median_ms=stats.median_ms,
                        p90_ms=stats.p90_ms, mean_ms=stats.mean_ms, std_ms=stats.std_ms, runs=stats.runs,
                        threads=stats.threads, dtype=dtype, graph=graph)

                cfg = LatencyConfig(warmup=warmup, min_runs=min_runs, min_seconds=min_s,
                                    max_seconds=max_s, threads=threads)
                try:
                    record.latency.append(point(measure_latency(call, dev, cfg), graph=False))
                except Exception as exc:  # e.g. torch.compile cannot build this model on this device
                    if not compile_mode:
                        raise
                    record.latency_unsupported[dev] = f"torch.compile(mode={compile_mode!r}) failed: " \
                                                      f"{type(exc).__name__}: {_first_line(exc)}"
                    update(len(task.config.latency_batch_sizes) - i)
                    break
                if kind == "cuda":
                    try:
                        record.latency.append(point(measure_latency(call, dev, replace(cfg, cuda_graph=True)),
                                                    graph=True))
                    except Exception as exc:  # host syncs, dynamic shapes, CPU work inside the forward...
                        record.latency_unsupported.setdefault(
                            f"{kind} graph", f"batch {bs}: CUDA graph capture failed: {type(exc).__name__}: "
                                             f"{_first_line(exc)}")
                        torch.cuda.synchronize(dev)
                record.memory.append(MemoryPoint(device=kind, device_name=device_name(dev),
                                                 batch_size=bs, peak_bytes=peak_memory(call, dev), dtype=dtype))
                update(1)
        model.to("cpu")


def compiled(model: torch.nn.Module, mode: str):
    """The callable that is timed: the model, or `torch.compile(model, mode=...)`. Dynamo's caches are
    reset first: they are keyed by code object, so the models of earlier runs (same classes) would
    otherwise use up its recompile limit and later models would silently fall back to eager."""
    if not mode:
        return model
    torch._dynamo.reset()
    return torch.compile(model, mode=mode)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""


def compute_dtype(model: torch.nn.Module) -> str:
    """The dtype the model computes in, recorded with each latency and memory point: a model
    compressed for CUDA runs in fp16 (`compute=auto`) on every device it is timed on, the CPU
    included, and a reader must be able to see that."""
    dtype = getattr(model, "dtype", None)  # CastInputs (half, quantization compute=) and HF models say it
    if not isinstance(dtype, torch.dtype):  # else: the float dtype holding most parameters
        counts: dict[torch.dtype, int] = {}
        for p in model.parameters():
            if p.is_floating_point():
                counts[p.dtype] = counts.get(p.dtype, 0) + p.numel()
        dtype = max(counts, key=counts.get) if counts else torch.float32
    return str(dtype).removeprefix("torch.")

