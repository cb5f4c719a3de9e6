"""`MeasureWorker`: the parent's handle on the measurement process (`worker.py`).

The harness, the conformance checks and `slimbench verify` measure every artifact through one of
these: a fresh interpreter, started on first use and kept for the next request (its loaded tasks
with it), that never runs a method's `compress`. A request that fails there raises
`MeasureFailed` here with the worker's traceback; a process that dies (a crashing kernel) is
reported and replaced by a fresh one on the next request, and so is one whose request failed,
so nothing a failed measurement left behind reaches the next run.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import weakref
from dataclasses import asdict
from pathlib import Path
from typing import Any

from slimbench.suite.progress import ProgressConfig


class MeasureFailed(RuntimeError):
    """A measurement failed in the worker; `kind` is the worker's exception type, `details` its traceback."""

    def __init__(self, message: str, kind: str = "", details: str = ""):
        super().__init__(message)
        self.kind, self.details = kind, details


def task_ref(task) -> dict[str, Any]:
    """How the worker finds `task`: its name and profile, and the registry entry behind the name (a
    YAML path, or a loader's module:qualname), so a task registered here at run time is known there."""
    from slimbench.core.registry import _origin_of
    from slimbench.tasks import TASKS

    entry = TASKS.get(task.name) if task.name in TASKS else None
    return {"name": task.name, "profile": task.config.profile,
            "entry": entry if isinstance(entry, str) else _origin_of(entry) if entry is not None else None}


def method_ref(method) -> dict[str, Any]:
    """How the worker rebuilds `method`: its name, its class's module:qualname and its config, and
    where its pipeline stages' classes live, so a method registered here at run time (a plugin
    given as module:attr, a test double) is imported there from its module."""
    from slimbench.core.config import to_dict
    from slimbench.core.registry import _origin_of
    from slimbench.methods import METHODS

    stages = getattr(method, "stages", [])
    return {"name": method.name, "class": _origin_of(type(method)), "config": to_dict(method.config),
            "registry": {m.name: METHODS.origin(m.name) if m.name in METHODS else _origin_of(type(m)) for m in stages}}


class MeasureWorker:
    """A long-lived measurement process (see the module docstring). Use as a context manager, or
    call `close()`; a worker left open is killed when this object is collected or at exit."""

    def __init__(self, progress: ProgressConfig | None = None):
        self.progress = progress or ProgressConfig(False)
        self._proc: subprocess.Popen | None = None
        self._reply = None
        self._finalizer = None

    def _start(self) -> None:
        read, write = os.pipe()
        # it imports what this process can (a test double's module, a plugin beside the code), from here
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(_import_path()))
        try:
            self._proc = subprocess.Popen([sys.executable, "-m", "slimbench.suite.measure.worker", "--reply-fd",
                                           str(write)], stdin=subprocess.PIPE, stdout=_stdout(), pass_fds=(write,),
                                          env=env, text=True)
        finally:
            os.close(write)
        self._reply = os.fdopen(read, "r", encoding="utf-8")
        self._finalizer = weakref.finalize(self, _kill, self._proc, self._reply)

    def start(self) -> None:
        """Start the process now (if it is not running), so its imports overlap the caller's work."""
        if self._proc is None or self._proc.poll() is not None:
            self._start()

    def request(self, req: dict[str, Any]) -> dict[str, Any]:
        """Send one request, wait for its answer; `MeasureFailed` if it failed or the process died."""
        self.start()
        req = {**req, "path": _import_path()}
        assert self._proc is not None and self._proc.stdin is not None and self._reply is not None
        try:
            self._proc.stdin.write(json.dumps(req) + "\n")
            self._proc.stdin.flush()
            line = self._reply.readline()
        except BrokenPipeError:
            line = ""
        except BaseException:  # Ctrl-C while it measures: it is interrupted too; never leave it behind
            self.close()
            raise
        if not line:
            code = self._proc.wait()
            self.close()
            raise MeasureFailed(f"the measurement process died ({_death(code)}) while measuring "
                                f"{req['method']['name']} on {req['task']['name']}", "died")
        answer = json.loads(line)
        if not answer.pop("ok", False):
            self.close()  # a fresh process for the next request: nothing a failure left behind carries over
            raise MeasureFailed(answer.get("error", "failed"), answer.get("type", ""), answer.get("traceback", ""))
        return answer

    def measure(self, task, method, artifact_dir, *, since: float | None, device: str,
                latency_devices: tuple[str, ...], threads: int, latency_profile: tuple, compile_mode: str = "",
                probe: dict[str, str] | None = None) -> dict[str, Any]:
        """The record parts `reloaded.measure_artifact` fills, measured in the worker. `probe`:
        {"inputs", "out"} paths: the reloaded model's logits on the saved inputs are saved too."""
        return self.request({"probe": probe,
            "kind": "measure", "task": task_ref(task), "method": method_ref(method),
            "artifact": str(artifact_dir), "since": since,
            "options": {"device": device, "latency_devices": list(latency_devices), "threads": threads,
                        "latency_profile": list(latency_profile), "compile_mode": compile_mode,
                        "progress": asdict(self.progress)}})

    def outputs(self, task, method, artifact_dir, inputs_path, out_path, since: float | None = None) -> None:
        """Reload the artifact there and save its outputs on the saved inputs at `out_path`."""
        self.request({"kind": "outputs", "task": task_ref(task), "method": method_ref(method),
                      "artifact": str(artifact_dir), "since": since,
                      "inputs": str(inputs_path), "out": str(out_path)})

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
        self._proc = self._reply = self._finalizer = None

    def __enter__(self) -> "MeasureWorker":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def write_probe(task, model, where: Path) -> dict[str, str]:
    """The compressed model's logits on two test examples, saved beside the inputs, for the
    measurement process to compare its reloaded model with."""
    import torch

    from slimbench.suite.measure.accuracy import logits_of

    where.mkdir(parents=True, exist_ok=True)
    inputs = task.example_inputs(2)
    torch.save(inputs, where / "inputs.pt")
    with torch.no_grad():
        torch.save(logits_of(model(**inputs)), where / "expected.pt")
    return {"inputs": str(where / "inputs.pt"), "out": str(where / "reloaded.pt"),
            "expected": str(where / "expected.pt")}


def probe_differs(probe: dict[str, str]) -> str | None:
    """Why the reloaded model is not the method's compressed model, or None when it is."""
    import torch

    expected, got = torch.load(probe["expected"]).float(), torch.load(probe["out"]).float()
    if expected.shape == got.shape and torch.allclose(got, expected, rtol=1e-3, atol=1e-3 * float(expected.abs().max())):
        return None
    diff = float((got - expected).abs().max()) if expected.shape == got.shape else float("nan")
    return (f"reloaded from its artifact in the measurement process, the model computes other outputs than the "
            f"method's compressed model (max |difference| {diff:.3g}): the artifact does not hold everything the "
            "model needs, and what is measured is what its bytes hold")


def _import_path() -> list[str]:
    return [os.path.abspath(p or os.curdir) for p in sys.path]


def _stdout():
    """The worker's stdout goes to our stderr: a plugin printing there must not mix into our output."""
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # a captured stream without a descriptor
        return subprocess.DEVNULL


def _kill(proc: subprocess.Popen, reply) -> None:
    try:
        if proc.poll() is None:
            if proc.stdin is not None:
                try:
                    proc.stdin.close()  # the worker ends its loop on EOF
                except OSError:
                    pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    finally:
        reply.close()


def _death(code: int) -> str:
    if code < 0:
        import signal
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
