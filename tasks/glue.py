"""GLUE (SST-2, MNLI) from the hub's `nyu-mll/glue` or a local copy of its files, via `hub.hf_dataset`.

GLUE's test labels are hidden, so the test split is GLUE's labelled validation set (MNLI: the
matched one) and the validation split is held out of the training set, seeded by the task seed.
A local copy has the hub repo's layout, `{root}/{config}/{split}-*.parquet` (what
`hf download nyu-mll/glue --repo-type dataset --local-dir DIR` writes), or CSV files with the
same columns (`{root}/{config}/{split}.csv`); the root is `data.args.root` or $GLUE_ROOT.
Both go through the same `hf_dataset` loader as the hub copy.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimbench.tasks.base import TaskConfig, TaskData
from slimbench.tasks.hub import hf_dataset

GLUE_HUB = "nyu-mll/glue"
GLUE_ENV = "GLUE_ROOT"
SOURCES = ("auto", "local", "hub")
FORMATS = ("parquet", "csv")


@dataclass(frozen=True)
class GlueConfig:
    text_columns: tuple[str, ...]  # one sentence, or a (premise, hypothesis) pair
    labels: tuple[str, ...]  # class names in GLUE's label order
    test_split: str  # GLUE's labelled validation split


GLUE = {
    "sst2": GlueConfig(("sentence",), ("negative", "positive"), "validation"),
    "mnli": GlueConfig(("premise", "hypothesis"), ("entailment", "neutral", "contradiction"), "validation_matched"),
}


def glue_root(root: str | None) -> tuple[Path | None, str]:
    """(the local GLUE copy, where that came from): `root`, else $GLUE_ROOT, else None."""
    if root:
        return Path(root).expanduser(), "data.args.root"
    env = os.environ.get(GLUE_ENV)
    return (Path(env).expanduser(), f"${GLUE_ENV}") if env else (None, f"${GLUE_ENV} unset")


def local_files(root: Path, config: str, split: str) -> tuple[str, list[str]]:
    """(format, files) of one split in a local copy, parquet first; ([], ...) when absent."""
    folder = root / config
    for fmt in FORMATS:
        found = sorted(folder.glob(f"{split}-*.{fmt}")) + sorted(folder.glob(f"{split}.{fmt}"))
        if found:
            return fmt, [str(f) for f in found]
    return "", []


def glue_config(config: str) -> GlueConfig:
    if config not in GLUE:
        raise ValueError(f"GLUE config {config!r} is not supported; choose one of {', '.join(GLUE)}")
    return GLUE[config]


def glue(cfg: TaskConfig, config: str, root: str | None = None, source: str = "auto", val_size: int = 2000,
         train_size: int | None = None, max_length: int = 128, tokenizer: dict[str, Any] | None = None,
         hub_id: str = GLUE_HUB, cache_dir: str | None = None) -> TaskData:
    """One GLUE task: train minus `val_size` held out (seeded) / val / GLUE's labelled validation as test.

    Args:
        config: `sst2` or `mnli`.
        source: `local` (parquet/CSV under `root` or $GLUE_ROOT), `hub` (nyu-mll/glue) or `auto`
            (local when a root is configured, else the hub).
        train_size: train on a seeded subset of this many of the remaining training examples.
        tokenizer: {package|path|model_id: ...}; defaults to the model's source.
    """
    spec = glue_config(config)
    if source not in SOURCES:
        raise ValueError(f"source={source!r}; choose one of {', '.join(SOURCES)}")
    folder, origin = glue_root(root)
    common: dict[str, Any] = dict(train_split="train", test_split=spec.test_split, val_size=val_size,
                                  text_columns=list(spec.text_columns), label_names=list(spec.labels),
                                  max_length=max_length, tokenizer=tokenizer, train_size=train_size,
                                  cache_dir=cache_dir)
    if source == "local" or (source == "auto" and folder is not None):
        if folder is None:
            raise FileNotFoundError(f"task {cfg.name!r}: no local GLUE copy: set data.args.root or ${GLUE_ENV}")
        files, fmt = {}, ""
        for split in ("train", spec.test_split):
            fmt_split, found = local_files(folder, config, split)
            if not found:
                raise FileNotFoundError(
                    f"task {cfg.name!r}: no {split} files for GLUE {config} in {folder / config} (root from {origin}); "
                    f"expected {split}-*.parquet (the hub repo's layout) or {split}.csv")
            files[split], fmt = found, fmt or fmt_split
        data = hf_dataset(cfg, path=fmt, data_files=files, **common)
        where = {"source": "local", "path": str(folder / config), "root_from": origin, "format": fmt}
    else:
        data = hf_dataset(cfg, path=hub_id, name=config, **common)
        where = {"source": "hub", "path": hub_id, "name": config}
    _check_label_order(cfg, data, spec)
    data.info.update(where, glue_config=config, labels=list(spec.labels),
                     split=f"train: GLUE {config} train minus {val_size} held out as val (seed {cfg.seed}); "
                           f"test: GLUE's labelled {spec.test_split} (its test labels are hidden)")
    return data


def _check_label_order(cfg: TaskConfig, data: TaskData, spec: GlueConfig) -> None:
    """A copy whose ClassLabel names another order would silently swap classes: refuse it."""
    feature = (getattr(getattr(data.train, "ds", None), "features", None) or {}).get("label")
    names = list(getattr(feature, "names", []) or [])
    if names and names != list(spec.labels):
        raise ValueError(f"task {cfg.name!r}: the data's labels are {names}, GLUE's order is {list(spec.labels)}")
