"""Published checkpoints as task baselines: `baseline: {checkpoint: REF}` in a task's YAML.

Training an ImageNet or GLUE baseline is not what a compression benchmark should spend its
budget on, and the published weights are what papers compare against. A reference names them:

    timm:NAME[.TAG]        timm's pretrained weights, fetched from the hub repo timm's pretrained
                           config names (timm:resnet50.tv_in1k -> timm/resnet50.tv_in1k)
    hf:ORG/NAME[@REVISION] a transformers model repo (its config.json and weights)
    PATH                   a local weight file (.safetensors, .bin, .pt, .pth) or a directory: an
                           HF model directory (config.json beside the weights) or one holding
                           model.safetensors / pytorch_model.bin

`locate` finds the files first (the hub cache, then a download unless offline) and fails with
what is missing and how to provide it before anything is built; `load_weights` loads them into
the task's freshly built model, strictly: every tensor of the model must come from the checkpoint.
"""
from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slimbench.tasks.hubcache import HOW_TO_PROVIDE, cached_file, env_summary, hub_cache, sha256_file, snapshot_revision

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from slimbench.tasks.base import Task

SCHEMES = ("timm", "hf")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # preference order, as transformers and timm
INDEX_FILES = {"model.safetensors": "model.safetensors.index.json", "pytorch_model.bin": "pytorch_model.bin.index.json"}
REF_FORMS = "timm:NAME.TAG, hf:ORG/NAME[@REVISION] or a local path (a weight file or an HF model directory)"


class CheckpointNotFound(FileNotFoundError):
    """A declared checkpoint is not here: the message names it, where it looked and how to provide it."""


@dataclass(frozen=True)
class CheckpointRef:
    ref: str  # as written in the YAML
    scheme: str  # timm | hf | path
    target: str  # timm model name, hub repo id or local path
    revision: str | None = None  # hf:...@REVISION


@dataclass(frozen=True)
class Located:
    """The files of a checkpoint on this machine and where they came from."""

    ref: CheckpointRef
    files: tuple[Path, ...]  # weight files (shards in order)
    model_dir: Path | None = None  # an HF model directory: config.json beside the weights
    repo: str | None = None  # hub repo the files came from
    revision: str | None = None  # the hub commit they were cached from
    looked: tuple[str, ...] = field(default=())

    def provenance(self) -> dict[str, Any]:
        """What a run record keeps: the reference, the hub repo and commit, and each file's sha256."""
        out: dict[str, Any] = {"ref": self.ref.ref, "kind": self.ref.scheme,
                               "source": "hub" if self.repo else "local"}
        if self.repo:
            out.update(repo=self.repo, revision=self.revision, requested_revision=self.ref.revision)
        out["path"] = str(self.model_dir or (self.files[0] if len(self.files) == 1 else self.files[0].parent))
        out["sha256"] = {f.name: sha256_file(f) for f in self.files}
        return out


def parse_ref(ref: str) -> CheckpointRef:
    """`timm:...`, `hf:...` or a path; an unknown `scheme:` that is no existing path is an error."""
    ref = ref.strip()
    scheme, sep, rest = ref.partition(":")
    if sep and scheme in SCHEMES:
        if not rest.strip():
            raise ValueError(f"checkpoint {ref!r} names no {scheme} model; use {REF_FORMS}")
        if scheme == "hf":
            repo, _, revision = rest.partition("@")
            return CheckpointRef(ref, "hf", repo.strip(), revision.strip() or None)
        return CheckpointRef(ref, "timm", rest.strip())
    if sep and len(scheme) > 1 and "/" not in scheme and not Path(ref).expanduser().exists():
        raise ValueError(f"checkpoint {ref!r}: unknown scheme {scheme!r}; use {REF_FORMS}")
    return CheckpointRef(ref, "path", str(Path(ref).expanduser()))


def _missing(ref: CheckpointRef, what: str, looked: list[str], context: str) -> CheckpointNotFound:
    local = ("give a local path instead (baseline.checkpoint: /path/to/model.safetensors, or an HF model "
             "directory)")
    how = f"{local}; or {HOW_TO_PROVIDE}" if ref.scheme != "path" else (
        f"put the file there, or give another path as baseline.checkpoint ({REF_FORMS})")
    where = "; ".join(looked) if looked else "nowhere"
    env = f" Environment: {env_summary()}." if ref.scheme != "path" else ""
    return CheckpointNotFound(f"{context}baseline checkpoint {ref.ref!r} not found: {what}. Looked in: {where}. "
                              f"How to provide it: {how}.{env}")


# --------------------------------------------------------------------------- locate

def locate(ref: str, download: bool = True, context: str = "") -> Located:
    """The checkpoint's files, from the hub cache or (with `download`, unless offline) the hub."""
    parsed = parse_ref(ref)
    if parsed.scheme == "timm":
        return _locate_timm(parsed, download, context)
    if parsed.scheme == "hf":
        return _locate_hub_model(parsed, parsed.target, parsed.revision, download, context)
    return _locate_path(parsed, context)


def _locate_timm(ref: CheckpointRef, download: bool, context: str) -> Located:
    import timm
    from timm.models import get_pretrained_cfg

    try:
        pcfg = get_pretrained_cfg(ref.target)
    except RuntimeError:  # a known architecture with an unknown tag
        pcfg = None
    if pcfg is None:
        close = difflib.get_close_matches(ref.target, timm.list_pretrained(), n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise _missing(ref, f"timm {timm.__version__} has no pretrained weights named {ref.target!r}{hint}",
                       [f"timm.list_pretrained() of timm {timm.__version__}"], context)
    if not pcfg.hf_hub_id:
        raise _missing(ref, f"timm publishes {ref.target!r} only at {pcfg.url or '(no url)'}, not on the hub",
                       [], context)
    repo, _, revision = pcfg.hf_hub_id.partition("@")
    names = (pcfg.hf_hub_filename,) if pcfg.hf_hub_filename else WEIGHT_FILES
    path, looked = _hub_file(ref, repo, names, revision or None, download, context)
    return Located(ref, (path,), repo=repo, revision=snapshot_revision(path), looked=tuple(looked))


def _locate_hub_model(ref: CheckpointRef, repo: str, revision: str | None, download: bool, context: str) -> Located:
    config, looked = _hub_file(ref, repo, ("config.json",), revision, download, context)
    weights, more = _hub_file(ref, repo, (*WEIGHT_FILES, *INDEX_FILES.values()), revision, download, context)
    files = [weights]
    if weights.name.endswith(".index.json"):  # sharded: every shard the index names
        shards = sorted(set(json.loads(weights.read_text())["weight_map"].values()))
        files = [_hub_file(ref, repo, (shard,), revision, download, context)[0] for shard in shards]
    return Located(ref, tuple(files), model_dir=config.parent, repo=repo, revision=snapshot_revision(config),
                   looked=tuple(looked + more))


def _hub_file(ref: CheckpointRef, repo: str, names: tuple[str, ...], revision: str | None, download: bool,
              context: str) -> tuple[Path, list[str]]:
    """The first of `names` in the hub cache, else downloaded (first that exists in the repo)."""
    looked = [f"hub cache {hub_cache()} for {repo}@{revision or 'main'}: {', '.join(names)}"]
    for name in names:
        found = cached_file(repo, name, revision)
        if found is not None:
            return found, looked
    if not download:
        raise _missing(ref, f"{' / '.join(names)} of {repo} is not in the local hub cache", looked, context)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HFValidationError,
                                        LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError)

    looked.append(f"the Hugging Face hub ({repo})")
    for name in names:
        try:
            return Path(hf_hub_download(repo, name, revision=revision)), looked
        except LocalEntryNotFoundError as exc:  # offline or no connection: the next name would fail alike
            raise _missing(ref, f"{repo} is not cached and the hub is unreachable ({exc})", looked, context) from exc
        except EntryNotFoundError:
            continue
        except GatedRepoError as exc:
            raise _missing(ref, f"{repo} is gated: accept its terms on the hub and set HF_TOKEN", looked,
                           context) from exc
        except (RepositoryNotFoundError, RevisionNotFoundError, HFValidationError) as exc:
            raise _missing(ref, f"no repo/revision {repo}@{revision or 'main'} on the hub (a typo? private repos "
                                f"need HF_TOKEN): {type(exc).__name__}", looked, context) from exc
    raise _missing(ref, f"{repo} holds none of {', '.join(names)}", looked, context)


def _locate_path(ref: CheckpointRef, context: str) -> Located:
    p = Path(ref.target)
    looked = [str(p)]
    if p.is_file():
        if p.suffix not in WEIGHT_SUFFIXES:
            raise ValueError(f"{context}baseline checkpoint {ref.ref!r}: {p.suffix!r} is not a weight file; "
                             f"give one of {', '.join(WEIGHT_SUFFIXES)} or an HF model directory")
        return Located(ref, (p,), looked=tuple(looked))
    if not p.is_dir():
        raise _missing(ref, f"no file or directory {p}", looked, context)
    for name in WEIGHT_FILES:
        index = p / INDEX_FILES[name]
        if (p / name).is_file() or index.is_file():
            files = ([p / name] if (p / name).is_file() else
                     [p / s for s in sorted(set(json.loads(index.read_text())["weight_map"].values()))])
            lost = [str(f) for f in files if not f.is_file()]
            if lost:
                raise _missing(ref, f"shards {', '.join(lost)} are missing", looked, context)
            model_dir = p if (p / "config.json").is_file() else None
            return Located(ref, tuple(files), model_dir=model_dir, looked=tuple(looked))
    raise _missing(ref, f"{p} holds none of {', '.join(WEIGHT_FILES)} (or their .index.json)", looked, context)


# --------------------------------------------------------------------------- load

def read_state_dict(files: tuple[Path, ...]) -> dict[str, "torch.Tensor"]:
    """Tensors of the weight files (safetensors without pickle; .bin/.pt/.pth with weights_only)."""
    import torch
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for f in files:
        part = load_file(str(f)) if f.suffix == ".safetensors" else torch.load(f, map_location="cpu", weights_only=True)
        for wrapper in ("state_dict", "model"):  # training checkpoints nest the weights
            if isinstance(part.get(wrapper), dict):
                part = part[wrapper]
        state.update({k.removeprefix("module."): v for k, v in part.items() if isinstance(v, torch.Tensor)})
    return state


def _hf_state(model: "nn.Module", model_dir: Path, ref: str, context: str = ""
              ) -> tuple["nn.Module", dict[str, "torch.Tensor"]]:
    """(the model's transformers submodule, its weights read by transformers from `model_dir`).

    transformers maps legacy names (LayerNorm gamma/beta) and shards; a head the checkpoint lacks
    (a base model, not a fine-tuned classifier) would be initialised at random, so it is an error."""
    from transformers import PreTrainedModel

    inner = next((m for m in model.modules() if isinstance(m, PreTrainedModel)), None)
    if inner is None:
        raise ValueError(f"{context}baseline checkpoint {ref!r} is an HF model directory, but the task's model "
                         "holds no transformers model to load it into")
    loaded, info = type(inner).from_pretrained(str(model_dir), local_files_only=True, output_loading_info=True)
    if info.get("missing_keys"):
        raise ValueError(f"{context}baseline checkpoint {ref!r} lacks {len(info['missing_keys'])} tensor(s) of "
                         f"{type(inner).__name__} (e.g. {sorted(info['missing_keys'])[:4]}): is it a base model "
                         "rather than one fine-tuned for this task?")
    return inner, loaded.state_dict()


def load_weights(model: "nn.Module", located: Located, context: str = "") -> None:
    """Load the checkpoint into `model` (or the submodule whose names it matches), strictly."""
    ref = located.ref.ref
    if located.model_dir is not None and (located.model_dir / "config.json").is_file():
        target, state = _hf_state(model, located.model_dir, ref, context)
    else:
        state = read_state_dict(located.files)
        candidates = [model, *model.children()]
        target = max(candidates, key=lambda m: len(state.keys() & m.state_dict().keys()))
    own = target.state_dict()
    bad = [f"{k}: checkpoint {list(v.shape)} vs model {list(own[k].shape)}"
           for k, v in state.items() if k in own and own[k].shape != v.shape]
    if bad:
        raise ValueError(f"{context}baseline checkpoint {ref!r} does not fit the task's model ({len(bad)} shape "
                         f"mismatch(es): {'; '.join(bad[:4])}); check num_classes and model.kwargs against it")
    result = target.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{context}baseline checkpoint {ref!r} does not fit the task's model: missing "
                         f"{len(result.missing_keys)} tensor(s) {result.missing_keys[:4]}, unexpected "
                         f"{len(result.unexpected_keys)} {result.unexpected_keys[:4]}; is it the same architecture?")


def checkpoint_baseline(task: "Task") -> tuple["nn.Module", dict[str, Any]]:
    """The task's published baseline: located first (a missing one fails before any model is built
    or data read), loaded into `task.build_model()`, in eval mode; returns (model, provenance)."""
    ref = task.config.checkpoint
    if not ref:
        raise ValueError(f"task {task.name!r} declares no baseline.checkpoint")
    context = f"task {task.name!r}: "
    located = locate(ref, download=True, context=context)
    model = task.build_model()
    load_weights(model, located, context)
    return model.eval(), located.provenance()
