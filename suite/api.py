"""slimbench from Python: any registered method on your own model and data, the suite's artifact
format, its measurements, and the tracked results as DataFrames.

    import slimbench
    small = slimbench.compress(model, "prune.magnitude:sparsity=0.5", train=loader, val=val_loader, budget=200)
    slimbench.save(small, "out/")
    again = slimbench.load("out/", build_model=lambda: MyNet())
    slimbench.measure(again, example_inputs)
    df = slimbench.results("results/")

`compress` is the door the harness goes through too (`run_method`): the same context, the same
private copy of the model, the same budget ledger. Batches may be `(inputs, labels)` with inputs a
tensor (passed as the model's first forward argument) or a dict of keyword arguments, or a dict
with a `labels` entry (Hugging Face style).
"""
from __future__ import annotations

import copy
import functools
import inspect
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import torch
    from torch import nn

    from slimbench.methods.base import Compressed, CompressionContext, Method


class MissingInput(ValueError):
    """A method needs an argument the caller did not give (named in the message)."""


@dataclass
class CompressedModel:
    """What `compress` returns: the compressed `model`, what the method reported (`metrics`), the
    optimizer steps it spent (`budget`), and what `save` needs (`method`, `result`)."""

    model: "nn.Module"
    metrics: dict[str, Any]
    budget: dict[str, Any]
    method: "Method" = field(repr=False)
    result: "Compressed" = field(repr=False)


def run_method(method: "Method", model: "nn.Module", ctx: "CompressionContext", seed: int = 0) -> "Compressed":
    """One method on a private copy of `model` (the caller's stays as it was), seeded."""
    import torch

    from slimbench.methods.base import as_compressed

    torch.manual_seed(seed)
    return as_compressed(method.compress(copy.deepcopy(model).to(ctx.device), ctx))


def _input_name(model: "nn.Module") -> str:
    params = [p for p in inspect.signature(model.forward).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if not params:
        raise TypeError(f"{type(model).__name__}.forward takes no positional argument: give batches as "
                        "(dict of keyword arguments, labels)")
    return params[0].name


def _batches(data: Iterable | None, name: str, model: "nn.Module") -> list | None:
    """The caller's batches in the suite's form: ({forward kwarg: tensor}, labels)."""
    if data is None:
        return None
    import torch

    arg, out = _input_name(model), []
    for i, batch in enumerate(data):
        if isinstance(batch, dict) and "labels" in batch:
            batch = ({k: v for k, v in batch.items() if k != "labels"}, batch["labels"])
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise TypeError(f"{name}: batch {i} is a {type(batch).__name__}; give (inputs, labels) pairs, inputs a "
                            "tensor or a dict of the model's keyword arguments, or dicts with a 'labels' key")
        inputs, labels = batch
        out.append((inputs if isinstance(inputs, dict) else {arg: inputs}, torch.as_tensor(labels)))
    if not out:
        raise ValueError(f"{name} is empty")
    return out


def _guarded(ctx: "CompressionContext", method: str, given: dict[str, bool], train: list | None
             ) -> "CompressionContext":
    """Make every data source the caller left out fail on first use, naming the argument."""
    from slimbench.suite.context import _example

    def missing(arg: str, what: str):
        def fail(*_: Any, **__: Any):
            raise MissingInput(f"{method} needs {what}: pass {arg}=... to slimbench.compress")
        return fail

    if not given["calibration"]:
        ctx.calibration = missing("calibration", "calibration batches (inputs of the kind the model will see)")
    if not given["train"]:
        ctx.train_stream = missing("train", "training batches (it fine-tunes or trains)")
    if not given["val"]:
        ctx.val = missing("val", "validation batches (it selects or scores on them)")
    if not (given["val"] or given["calibration"]):  # example inputs (tracing, kernel timing): any batches do
        ctx.example = functools.partial(_example, train) if train else \
            missing("val", "example inputs (from val, calibration or train batches)")
    return ctx


def compress(model: "nn.Module", method: "str | Method", *, train: Iterable | None = None,
             val: Iterable | None = None, calibration: Iterable | None = None, teacher: "nn.Module | None" = None,
             budget: int = 0, batch_size: int = 64, lr: float = 1e-3, candidates: int = 0, proxy_steps: int = 0,
             build_model: Callable[..., "nn.Module"] | None = None, device: str = "cpu",
             seed: int = 0, metric: str = "accuracy") -> CompressedModel:
    """Compress `model` (left unchanged) with a registered method (a spec such as
    "quant.gptq:bits=4", a pipeline "a+b", or a Method).

    budget: optimizer steps the method may train (fine-tuning, distillation), at `batch_size` and
        `lr`; candidates / proxy_steps: a search method's budget; teacher: the model distillation
        learns from (default: `model`); build_model(**overrides): builds fresh models of the
        architecture, for methods that build students or search children, and for `load`.
    metric: what `val` batches are scored by when a method selects on them: `accuracy` (labels are
        classes) or `perplexity` (a causal LM: labels are next tokens, -100 where none).
    A method needing an argument that was not given raises MissingInput naming it, at its first use.
    """
    import torch

    from slimbench.core.metrics import get_metric
    from slimbench.core.recipe import SearchBudget, TrainRecipe
    from slimbench.methods import Method, create_method
    from slimbench.suite.context import make_context

    get_metric(metric)  # a bad name fails here, naming the valid ones
    m = method if isinstance(method, Method) else create_method(method)
    reason = getattr(m, "model_unsupported", lambda _: None)(model)
    if reason:
        raise ValueError(f"{m.name} cannot compress this model: {reason}")
    if m.starts_from == "teacher" and build_model is None:
        raise MissingInput(f"{m.name} builds new models (students or search children): pass build_model=... "
                           "(a function returning a fresh model of this architecture)")
    data = {k: _batches(v, k, model) for k, v in (("train", train), ("val", val), ("calibration", calibration))}
    ctx = make_context(baseline=teacher if teacher is not None else model, device=torch.device(device), seed=seed,
                       owner=m.name, calibration=data["calibration"], train=data["train"], val=data["val"],
                       finetune=TrainRecipe(steps=budget, batch_size=batch_size, lr=lr),
                       search=SearchBudget(candidates, proxy_steps), build_model=build_model, metric=metric)
    ctx = _guarded(ctx, m.name, {k: v is not None for k, v in data.items()}, data["train"])
    result = run_method(m, model, ctx, seed)
    return CompressedModel(result.model, dict(result.metrics), ctx.ledger.summary(), m, result)


def save(compressed: CompressedModel, path: str | Path) -> dict[str, Any]:
    """Write the suite's artifact (model.safetensors + model.json) under `path`; returns its sizes."""
    from slimbench.suite.artifact import save_artifact

    info = save_artifact(compressed.result, compressed.method, Path(path))
    return {"size_bytes": info.size_bytes, "tensors_bytes": info.tensors_bytes, "meta_bytes": info.meta_bytes,
            "params_total": info.params_total, "params_nonzero": info.params_nonzero}


def load(path: str | Path, build_model: Callable[..., "nn.Module"]) -> "nn.Module":
    """Rebuild a compressed model from the artifact's bytes: `build_model(**overrides)` makes a fresh
    model of the original architecture, the method that wrote the artifact restores it."""
    from slimbench.methods import create_method
    from slimbench.suite.artifact import load_artifact, read_artifact

    _, doc = read_artifact(Path(path))
    saved = doc["method"]
    config = {k: v for k, v in saved.get("config", {}).items() if k != "version"}  # the schema's, not a setting
    method = create_method(f"{saved['name']}:{json.dumps(config)}" if config else saved["name"])
    return load_artifact(Path(path), build_model, method).eval()


def measure(model: "nn.Module | CompressedModel", inputs: "torch.Tensor | dict[str, torch.Tensor]", *,
            batch_sizes: Sequence[int] | None = None, device: str = "cpu", threads: int | None = None,
            quick: bool = False) -> dict[str, Any]:
    """The suite's measurements on your model: artifact bytes (a CompressedModel is saved as its
    method's artifact, a plain model as the baseline's), stored parameters, resident weight bytes,
    FLOPs at batch 1, latency at `batch_sizes` (default: the inputs' own batch) and each compressed
    layer's execution path. `inputs`: a tensor (the first forward argument) or keyword arguments."""
    import torch

    from slimbench.methods import create_method
    from slimbench.suite.artifact import save_artifact
    from slimbench.suite.measure.flops import count_flops
    from slimbench.suite.measure.latency import LatencyConfig, measure_latency
    from slimbench.suite.measure.paths import execution_paths
    from slimbench.suite.measure.size import tensor_bytes

    net = model.model if isinstance(model, CompressedModel) else model
    kwargs = inputs if isinstance(inputs, dict) else {_input_name(net): inputs}
    n = next(iter(kwargs.values())).shape[0]
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(model, CompressedModel):
            info = save_artifact(model.result, model.method, Path(tmp))
        else:
            info = save_artifact(net, create_method("baseline"), Path(tmp))
    net = net.to(device).eval()
    out: dict[str, Any] = {"size_bytes": info.size_bytes, "params_total": info.params_total,
                           "params_nonzero": info.params_nonzero}
    with torch.inference_mode():
        net(**{k: v[:1].to(device) for k, v in kwargs.items()})  # lazily expanded weights are resident now
    out["weights_bytes"] = tensor_bytes(net)
    flops = count_flops(net, {k: v[:1].to(device) for k, v in kwargs.items()})
    out["flops_dense"], out["flops_effective"] = flops["dense"], flops["effective"]
    cfg = LatencyConfig(warmup=2, min_runs=3, min_seconds=0.05, max_seconds=1.0, threads=threads) if quick \
        else LatencyConfig(threads=threads)
    out["latency_ms"] = {}
    for bs in batch_sizes or (n,):
        x = {k: v[torch.arange(bs) % n].to(device) for k, v in kwargs.items()}

        def call(x=x):
            with torch.inference_mode():
                return net(**x)
        out["latency_ms"][bs] = measure_latency(call, device, cfg).median_ms
    dtype = next((p.dtype for p in net.parameters() if p.is_floating_point()), torch.float32)
    out["execution_paths"] = execution_paths(net, device, dtype)
    return out


def results(results_dir: str | Path = "results", *, task: str | None = None, method: str | None = None,
            status: str | None = None, experiment: str | None = None, leaderboard: bool = False
            ) -> "pd.DataFrame":
    """Tracked runs as a DataFrame, one row per run (seeds apart); `leaderboard=True`: one row per
    configuration, the fields `slimbench results --json` prints."""
    import pandas as pd

    from slimbench.suite.summary import rows_from_records
    from slimbench.suite.tracking import EXPERIMENT, Tracker

    records = Tracker(None, experiment or EXPERIMENT, Path(results_dir), create=False).read_records(task, method,
                                                                                                   status)
    if leaderboard:
        return pd.DataFrame(rows_from_records(records))
    return pd.DataFrame([run_row(r) for r in records if r]).convert_dtypes()


def run_row(record: dict[str, Any]) -> dict[str, Any]:
    """One run record flattened: identity, every metric, latency per device and batch size."""
    from slimbench.core.record import RunRecord, device_label

    r = RunRecord.from_dict(record)
    row: dict[str, Any] = {"run_key": r.run_key, "task": r.task.name, "profile": r.task.profile,
                           "metric": r.task.metric, "method": r.method.label or r.method.name,
                           "method_name": r.method.name, "family": r.method.family, "seed": r.seed,
                           "status": r.status, "device": device_label(record.get("device")), "error": r.error,
                           "quality": r.quality}  # the task metric's value (accuracy, perplexity...)
    row.update({k: v for k, v in r.metrics.items() if not isinstance(v, (dict, list))})
    for p in r.latency:
        graph = "_graph" if getattr(p, "graph", False) else ""
        row[f"latency_ms_{p.device}_bs{p.batch_size}{graph}"] = p.median_ms
    for p in r.memory:
        row[f"peak_bytes_{p.device}_bs{p.batch_size}"] = p.peak_bytes
    row["warnings"] = len(r.warnings)
    return row
