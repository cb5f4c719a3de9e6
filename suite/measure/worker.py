"""The measurement process: artifacts are reloaded and measured here, never where they were made.

    python -m slimbench.suite.measure.worker --reply-fd N

Started by `isolated.MeasureWorker` and fed one JSON request per line on stdin; it answers one
JSON line per request on file descriptor N (never on stdout, where a plugin may print). It never
runs a method's `compress`, so what it measures is what the artifact's bytes hold: nothing the
method left in its object, its module globals or its process reaches it (and `audit.FileAudit`
refuses a restore that reads a file written during the run). It keeps each task it was asked
about (its test data loaded once) and serves requests until stdin closes.

Requests (`kind`):
- `measure`: reload `artifact` and measure it as the harness records it (`reloaded.measure_artifact`);
  the answer holds the record's measured parts.
- `outputs`: reload `artifact`, run it on the inputs saved (`torch.save`) at `inputs`, save the
  outputs at `out` (the conformance suite's self-contained check).
Each names its `task` ({name, profile, entry}) and its `method` ({name, class: "module:qualname",
config, registry: {name: "module:qualname"} of the methods a pipeline's stages name}), so a
method this process cannot find by name (registered at run time in the parent, a plugin given
as module:attr, a test double) is imported from where its class lives.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any


def _die_with_parent() -> None:
    """Linux: end when the process that started us ends (a killed Ray worker leaves no measurer)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _import(ref: str) -> Any:
    import importlib

    module, _, attr = ref.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class Server:
    """What the process keeps between requests: the tasks it has loaded."""

    def __init__(self) -> None:
        self.tasks: dict[tuple, Any] = {}

    def task(self, ref: dict[str, Any]):
        from slimbench.tasks import TASKS, get_task

        name, entry = ref["name"], ref.get("entry")
        if entry and name not in TASKS:
            TASKS.register(name)(entry if entry.endswith((".yaml", ".yml")) else _import(entry))
        key = (name, ref["profile"], entry)
        if key not in self.tasks:
            self.tasks[key] = get_task(name, ref["profile"])
        return self.tasks[key]

    def method(self, ref: dict[str, Any]):
        from slimbench.core.config import build
        from slimbench.methods import METHODS

        for name, origin in (ref.get("registry") or {}).items():
            if name not in METHODS:
                METHODS.register(name)(_import(origin))
        name = ref["name"]
        cls = METHODS.get(name) if name in METHODS and METHODS.origin(name) == ref["class"] else _import(ref["class"])
        if getattr(cls, "name", None) != name:  # registered under this name in the parent only (module:attr)
            if name not in METHODS:
                METHODS.register(name)(cls)
            else:  # the name is another class's here: a subclass that carries it
                cls = type(cls.__name__, (cls,), {"name": name, "__module__": cls.__module__})
        config = {k: v for k, v in ref["config"].items() if k != "version"}
        return cls(build(cls.config_cls, config, owner=name))

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        for entry in req.get("path") or ():  # the parent's import path now (a test may have extended it)
            if entry not in sys.path:
                sys.path.append(entry)
        task, method = self.task(req["task"]), self.method(req["method"])
        if req["kind"] == "outputs":
            return self.outputs(task, method, req)
        if req["kind"] == "measure":
            return self.measure(task, method, req)
        raise ValueError(f"unknown request kind {req['kind']!r}; expected measure or outputs")

    def measure(self, task, method, req: dict[str, Any]) -> dict[str, Any]:
        from slimbench.core.record import DeviceRef, MethodRef, RunRecord, TaskRef
        from slimbench.suite.measure.reloaded import measure_artifact
        from slimbench.suite.progress import ProgressConfig

        o = req["options"]
        record = RunRecord(run_key="", task=TaskRef(), method=MethodRef(), seed=None, device=DeviceRef())
        model = measure_artifact(task, method, Path(req["artifact"]), record=record, device=o["device"],
                         latency_devices=tuple(o.get("latency_devices") or ()), threads=int(o["threads"]),
                         latency_profile=tuple(o["latency_profile"]), progress=ProgressConfig(**o.get("progress", {})),
                         compile_mode=o.get("compile_mode", ""), since=req.get("since"))
        if req.get("probe"):  # the parent's check that these bytes give the model the method made
            _outputs(model.to("cpu"), req["probe"]["inputs"], req["probe"]["out"])
        d = record.to_dict()
        return {k: d[k] for k in ("metrics", "method_metrics", "sparsity_layers", "latency", "memory",
                                  "latency_unsupported", "execution_paths", "warnings")}

    def outputs(self, task, method, req: dict[str, Any]) -> dict[str, Any]:
        import functools

        from slimbench.suite.artifact import load_artifact
        from slimbench.suite.measure.audit import FileAudit

        since = req.get("since")
        guard = None if since is None else functools.partial(FileAudit, req["artifact"], since)
        model = load_artifact(Path(req["artifact"]), task.build_model, method, guard=guard).eval()
        _outputs(model, req["inputs"], req["out"])
        return {"out": req["out"]}


def _outputs(model, inputs_path: str, out_path: str) -> None:
    """The model's logits on the inputs saved at `inputs_path`, saved at `out_path`."""
    import torch

    from slimbench.suite.measure.accuracy import logits_of

    with torch.no_grad():
        torch.save(logits_of(model(**torch.load(inputs_path))), out_path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reply-fd", type=int, required=True)
    args = ap.parse_args(argv)
    _die_with_parent()
    import slimbench.suite.measure.reloaded  # noqa: F401  (torch and the measurement code, before the first request)
    reply = os.fdopen(args.reply_fd, "w", encoding="utf-8")
    server = Server()
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            answer = {"ok": True, **server.handle(json.loads(line))}
        except Exception as exc:  # the parent records it as the run's failure
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "type": type(exc).__name__,
                      "traceback": traceback.format_exc()}
        reply.write(json.dumps(answer, default=_plain) + "\n")
        reply.flush()
    return 0


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    return obj.item() if hasattr(obj, "item") else str(obj)


if __name__ == "__main__":
    sys.exit(main())
