"""Baselines trained by the suite, cached on disk by task definition + recipe + seed.

The cache key hashes everything that determines the trained weights, so a changed recipe never
reuses a stale model; weights are stored as safetensors and loaded without pickle.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn
    from slimbench.suite.trainer import Trainer
    from slimbench.tasks.base import Task


def cache_path(task: "Task", cache_dir: Path) -> Path:
    return cache_dir / "baselines" / f"{task.name}-{task.config.baseline_key()}.safetensors"


def get_baseline(task: "Task", trainer: "Trainer", cache_dir: Path, log=print) -> tuple["nn.Module", dict]:
    """Load the task's trained baseline from the cache, or train and cache it."""
    from safetensors.torch import load_file, save_file

    path = cache_path(task, cache_dir)
    model = task.build_model()
    if path.exists():
        model.load_state_dict(load_file(str(path)), strict=True)
        info = json.loads(path.with_suffix(".json").read_text())
        info["cached"] = True
        return model.eval(), info
    cfg = task.config
    log(f"training the {task.name} baseline ({cfg.train.steps} steps, profile {cfg.profile}); cached next time")
    start = time.perf_counter()
    result = trainer.fit(model, task.train_stream(cfg.train.batch_size, cfg.seed), cfg.train, cfg.seed,
                         desc=f"{task.name} baseline")
    info = {"task": task.name, "key": cfg.baseline_key(), "profile": cfg.profile, "steps": result.steps,
            "final_loss": result.final_loss, "train_seconds": round(time.perf_counter() - start, 2)}
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    save_file(_dedupe(state), str(tmp))
    path.with_suffix(".json").write_text(json.dumps(info, indent=2))
    tmp.replace(path)  # atomic: an interrupted training never leaves a half-written baseline
    info["cached"] = False
    return model.eval(), info


def _dedupe(state: dict) -> dict:
    """safetensors refuses shared storage (tied embeddings): clone the later aliases."""
    seen, out = set(), {}
    for k, v in state.items():
        key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape))
        out[k] = v.clone() if key in seen else v
        seen.add(key)
    return out
