"""The compressed-model artifact: `model.safetensors` + `model.json`, weighed to the byte.

The artifact is what a method's result *is*: the suite writes it, reports its on-disk
size as the model size, and reloads it through `Method.restore` onto a freshly built model
before measuring, so a method cannot claim a size its saved form does not have.

- `model.safetensors`: every distinct tensor of `model.state_dict()` once, contiguous,
  on CPU, in its own dtype (packed uint8, int8, fp16... are stored as they are).
- `model.json`: format version, method name/family/config, the method's `meta` (what its
  restore needs), `build_overrides` (the task-builder arguments of the restore skeleton, when
  the architecture changed), a dtype/shape summary per stored tensor, the alias map, the
  parameter counts of the stored tensors and the bytes of index tensors (sparse masks,
  indices, N:M metadata).

Tied weights: state_dict keys whose tensor is the very same data (same data pointer,
dtype, shape and strides as an earlier key) are not stored again; `aliases` maps each
such key to the stored key, and loading puts the same tensor back under both names.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Mapping

import torch
from torch import nn

from slimbench.suite.measure.size import artifact_size

if TYPE_CHECKING:  # pragma: no cover
    from slimbench.methods.base import Compressed, Method

FORMAT = "slimbench-artifact"
FORMAT_VERSION = 1
TENSORS_FILE = "model.safetensors"
META_FILE = "model.json"


@dataclass(frozen=True)
class ArtifactInfo:
    """Where the artifact was written and what it weighs."""

    dir: Path
    tensors_path: Path
    meta_path: Path
    size_bytes: int  # tensors_bytes + meta_bytes: the model size the suite reports
    tensors_bytes: int
    meta_bytes: int
    params_total: int
    params_nonzero: int
    index_bytes: int = 0  # bytes of index tensors (inside tensors_bytes)


def _norm_stat_names(model: nn.Module) -> set[str]:
    """state_dict names of normalization running statistics (not learned weights)."""
    from torch.nn.modules.batchnorm import _NormBase

    names = set()
    for prefix, m in model.named_modules(remove_duplicate=False):
        if isinstance(m, _NormBase):
            for b, buf in m.named_buffers(recurse=False):
                if buf is not None:
                    names.add(f"{prefix}.{b}" if prefix else b)
    return names


def index_names(model: nn.Module) -> set[str]:
    """state_dict names of index tensors: the buffers a module lists in `slim_index`."""
    names = set()
    for prefix, m in model.named_modules(remove_duplicate=False):
        for b in getattr(m, "slim_index", ()) or ():
            names.add(f"{prefix}.{b}" if prefix else b)
    return names


def count_params(model: nn.Module) -> tuple[int, int]:
    """(total, nonzero) numbers stored in the model's weights, counted by the suite.

    Counts elements of every floating-point or integer tensor in `model.state_dict()`,
    each distinct tensor once (tied weights count once), as stored: a uint8 tensor
    packing two 4-bit weights per byte counts one element per byte, and scales or
    zero-points are counted too. Left out: bool tensors, index tensors (`slim_index`: a
    sparse layer counts its values, not their positions) and the running statistics of
    normalization layers (BatchNorm `running_mean`/`running_var`/`num_batches_tracked`),
    which are not weights; so an unmodified model usually counts exactly its parameters.
    A method's own figure (e.g. logical weights inside packed storage, `params_total` in its
    meta) is recorded beside this count as the method's, never instead of it.
    """
    stored, _ = _dedupe(model.state_dict())
    return count_tensors(stored, _norm_stat_names(model) | index_names(model))


def count_tensors(tensors: Mapping[str, torch.Tensor], skip: set[str]) -> tuple[int, int]:
    """(total, nonzero) elements of the weight tensors among `tensors` (see `count_params`)."""
    total = nonzero = 0
    for name, t in tensors.items():
        if name in skip or t.dtype == torch.bool or t.is_complex():
            continue
        total += t.numel()
        nonzero += _nonzero(t)
    return total, nonzero


def stored_params(out_dir: Path, model: nn.Module) -> tuple[int, int]:
    """(total, nonzero) of the tensors the artifact's file holds, classified (index tensors,
    normalization statistics) by `model`'s layers: what a reloaded model may hold, no more."""
    tensors, doc = read_artifact(out_dir)
    distinct = {k: t for k, t in tensors.items() if k not in doc.get("aliases", {})}
    return count_tensors(distinct, _norm_stat_names(model) | index_names(model))


def _nonzero(t: torch.Tensor) -> int:
    try:
        return int(torch.count_nonzero(t))
    except (RuntimeError, NotImplementedError):  # e.g. float8 has no CPU count kernel
        return int(torch.count_nonzero(t.float()))


def _dedupe(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Split a state dict into distinct tensors and an alias map {alias: stored key}."""
    first: dict[tuple[Any, ...], str] = {}
    stored: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    for name, t in state.items():
        key = (str(t.device), t.data_ptr(), t.dtype, tuple(t.shape), t.stride())
        if t.numel() > 0 and key in first:
            aliases[name] = first[key]
            continue
        first.setdefault(key, name)
        stored[name] = t
    return stored, aliases


def _to_storable(stored: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU tensors that share no memory (safetensors refuses sharing).

    A tensor that is a view into memory another stored tensor also uses (but not an
    exact alias) is copied: the file then holds both, which is what loading needs.
    """
    out: dict[str, torch.Tensor] = {}
    used: set[int] = set()
    for name, t in stored.items():
        t = t.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        if t.numel() > 0 and ptr in used:
            t = t.clone()
            ptr = t.untyped_storage().data_ptr()
        used.add(ptr)
        out[name] = t
    return out


def save_artifact(result: "Compressed | nn.Module", method: "Method", out_dir: Path) -> ArtifactInfo:
    """Write `model.safetensors` and `model.json` under `out_dir` and weigh them."""
    from safetensors.torch import save_file

    from slimbench.core.config import to_dict
    from slimbench.methods.base import as_compressed

    result = as_compressed(result)
    model, extra = result.model, result.meta
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stored, aliases = _dedupe(model.state_dict())
    tensors = _to_storable(stored)
    total, nonzero = count_params(model)
    indices = index_names(model)
    index_bytes = sum(t.numel() * t.element_size() for k, t in tensors.items() if k in indices)
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "method": {"name": method.name, "family": method.family, "config": to_dict(method.config)},
        "meta": extra,
        "tensors": {k: {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape)}
                    for k, t in tensors.items()},
        "aliases": aliases,
        "params": {"total": total, "nonzero": nonzero},
    }
    if result.build_overrides:
        doc["build_overrides"] = result.build_overrides
    if index_bytes:
        doc["index_bytes"] = index_bytes
    tensors_path, meta_path = out_dir / TENSORS_FILE, out_dir / META_FILE
    save_file(tensors, str(tensors_path))
    meta_path.write_text(json.dumps(doc, separators=(",", ":"), sort_keys=True, default=str))
    tensors_bytes, meta_bytes = artifact_size([tensors_path]), artifact_size([meta_path])
    return ArtifactInfo(dir=out_dir, tensors_path=tensors_path, meta_path=meta_path,
                        size_bytes=artifact_size([tensors_path, meta_path]),
                        tensors_bytes=tensors_bytes, meta_bytes=meta_bytes,
                        params_total=total, params_nonzero=nonzero, index_bytes=index_bytes)


def read_artifact(out_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The stored tensors (aliases restored, on CPU) and the parsed `model.json`."""
    from safetensors.torch import load_file

    out_dir = Path(out_dir)
    doc = json.loads((out_dir / META_FILE).read_text())
    if doc.get("format") != FORMAT or doc.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{out_dir / META_FILE} is not a {FORMAT} v{FORMAT_VERSION} artifact "
                         f"(format={doc.get('format')!r}, version={doc.get('format_version')!r})")
    tensors = load_file(str(out_dir / TENSORS_FILE), device="cpu")
    for alias, target in doc.get("aliases", {}).items():
        tensors[alias] = tensors[target]
    return tensors, doc


def load_artifact(out_dir: Path, build_model: Callable[..., nn.Module], method: "Method",
                  guard: Callable[[], ContextManager[Any]] | None = None) -> nn.Module:
    """Rebuild the compressed model from the artifact's bytes alone:
    `method.restore(build_model(**build_overrides), tensors, meta)`.

    `build_model` builds a freshly initialised model of the task (`Task.build_model`), never
    a copy of the trained baseline; the method must be the one that wrote the artifact, with
    the same config (a restore builds its layers from the config). `guard()`, when given, is
    entered around the method's restore alone (the measurement's file audit).
    """
    from slimbench.core.config import to_dict

    tensors, doc = read_artifact(out_dir)
    saved = doc["method"]["name"]
    if saved != method.name:
        raise ValueError(f"artifact in {out_dir} was written by method {saved!r}, not {method.name!r}")
    written, ours = doc["method"].get("config", {}), to_dict(method.config)
    if written != ours:
        diff = ", ".join(f"{k}={written.get(k)!r} (given {ours.get(k)!r})" for k in sorted(set(written) | set(ours))
                         if written.get(k) != ours.get(k))
        raise ValueError(f"artifact in {out_dir} was written by {saved} with another config: {diff}")
    skeleton = build_model(**doc.get("build_overrides", {}))
    if guard is None:
        return method.restore(skeleton, tensors, doc.get("meta", {}))
    with guard():
        return method.restore(skeleton, tensors, doc.get("meta", {}))
