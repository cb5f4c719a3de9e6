"""Baselines trained by the suite, cached on disk by task definition + recipe + seed, or published.

The cache key hashes everything that determines the trained weights, so a changed recipe never
reuses a stale model. A cached baseline is an ordinary artifact (safetensors, loaded without
pickle) written by the `baseline` method, plus `train.json` describing how it was trained.

A task that declares `baseline: {checkpoint: REF}` (`tasks.checkpoints`) is not trained: its
published weights are loaded on every call (they already sit in the hub cache or at their path,
so nothing is copied into this cache), and the info says where they came from.
"""
from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn
    from slimbench.suite.trainer import Trainer
    from slimbench.tasks.base import Task


def cache_path(task: "Task", cache_dir: Path) -> Path:
    return cache_dir / "baselines" / f"{task.name}-{task.config.baseline_key()}"


def get_baseline(task: "Task", trainer: "Trainer", cache_dir: Path, log=print) -> tuple["nn.Module", dict]:
    """Load the task's trained baseline from the cache, or train and cache it."""
    from slimbench.methods.reference.baseline import Baseline
    from slimbench.suite.artifact import load_artifact, save_artifact

    if task.config.checkpoint:
        return published_baseline(task, log)
    path = cache_path(task, cache_dir)
    fingerprint = task.data().info.get("fingerprint")
    if (path / "train.json").exists():
        info = json.loads((path / "train.json").read_text())
        if info.get("data_fingerprint") == fingerprint:
            model = load_artifact(path, task.build_model, Baseline())
            return model.eval(), {**info, "cached": True}
        log(f"the {task.name} data changed since its baseline was cached (fingerprint "
            f"{info.get('data_fingerprint')} -> {fingerprint}); retraining")
    cfg = task.config
    log(f"training the {task.name} baseline ({cfg.train.steps} steps, profile {cfg.profile}); cached next time")
    model = task.build_model()
    start = time.perf_counter()
    result = trainer.fit(model, task.train_stream(cfg.train.batch_size, cfg.seed), cfg.train, cfg.seed,
                         desc=f"{task.name} baseline")
    info = {"task": task.name, "key": cfg.baseline_key(), "profile": cfg.profile, "steps": result.steps,
            "final_loss": result.final_loss, "train_seconds": round(time.perf_counter() - start, 2),
            "data_fingerprint": fingerprint}
    tmp = path.with_name(f"{path.name}.tmp-{uuid.uuid4().hex}")  # per process and host: two drivers may train at once
    shutil.rmtree(tmp, ignore_errors=True)
    save_artifact(model.cpu(), Baseline(), tmp)
    (tmp / "train.json").write_text(json.dumps(info, indent=2))
    fresh = (path / "train.json").exists() and \
        json.loads((path / "train.json").read_text()).get("data_fingerprint") == fingerprint
    if fresh:  # another process trained the same baseline (same key, seed and data) meanwhile: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
        return model.eval(), {**info, "cached": False}
    shutil.rmtree(path, ignore_errors=True)  # a stale one (other data)
    try:
        tmp.rename(path)  # an interrupted training never leaves a half-written baseline
    except OSError:  # another process renamed theirs in between
        shutil.rmtree(tmp, ignore_errors=True)
    return model.eval(), {**info, "cached": False}


def published_baseline(task: "Task", log=print) -> tuple["nn.Module", dict]:
    """The task's published checkpoint as its baseline: no training steps (methods' fine-tuning and
    search budgets are unchanged). A checkpoint that is not here fails before any data is read.

    info["checkpoint"]: {ref, kind, source (hub|local), repo, revision, path, sha256: {file: hex}}."""
    from slimbench.tasks.checkpoints import checkpoint_baseline

    cfg = task.config
    start = time.perf_counter()
    model, provenance = checkpoint_baseline(task)
    seconds = round(time.perf_counter() - start, 2)
    where = provenance.get("revision") or next(iter(provenance["sha256"].values()), "")[:12]
    log(f"{task.name} baseline: published checkpoint {cfg.checkpoint} ({provenance['source']}, {where}); not trained")
    return model, {"task": task.name, "key": cfg.baseline_key(), "profile": cfg.profile, "steps": 0,
                   "train_seconds": 0.0, "load_seconds": seconds, "source": "checkpoint",
                   "checkpoint": provenance, "cached": False}
