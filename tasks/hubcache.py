"""Where Hugging Face files live on this machine, looked up without any network access.

`slimbench tasks check` and the checkpoint resolver ask the same questions: is this hub file in
the local cache, is this dataset prepared in the `datasets` cache, and which environment
variables decided those places. The answers name the paths looked at, so a user can see why a
task would (or would not) run offline.
"""
from __future__ import annotations

import os
from pathlib import Path

# The variables the hub clients read: where the caches are, offline mode, and the access token
# (gated repos such as ILSVRC/imagenet-1k need one).
HUB_ENV = ("HF_HOME", "HF_HUB_CACHE", "HF_DATASETS_CACHE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_TOKEN")

HOW_TO_PROVIDE = (
    "run once with network access so the hub client caches it (gated repos also need an access token in "
    "HF_TOKEN, or `hf auth login`), or copy an existing cache and point HF_HOME (or HF_HUB_CACHE) at it; "
    "HF_HUB_OFFLINE=1 then keeps runs off the network")


def env_summary() -> str:
    """The hub-related environment as `NAME=value` pairs (the token only as set/unset)."""
    parts = []
    for name in HUB_ENV:
        value = os.environ.get(name)
        if value is None:
            parts.append(f"{name} unset")
        else:
            parts.append(f"{name}={'<set>' if name == 'HF_TOKEN' else value}")
    return ", ".join(parts)


def hub_cache() -> Path:
    """The hub file cache the hub client uses in this process (HF_HUB_CACHE, else HF_HOME/hub)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def datasets_cache() -> Path:
    """The `datasets` cache of prepared (Arrow) datasets (HF_DATASETS_CACHE, else HF_HOME/datasets)."""
    try:
        import datasets.config

        return Path(datasets.config.HF_DATASETS_CACHE)
    except ImportError:  # the optional package: report where it would look
        home = os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface"))
        return Path(os.environ.get("HF_DATASETS_CACHE", str(Path(home) / "datasets")))


def cached_file(repo_id: str, filename: str, revision: str | None = None, repo_type: str = "model",
                cache_dir: str | Path | None = None) -> Path | None:
    """The cached copy of one hub file, or None (never downloads)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision, repo_type=repo_type)
    return Path(found) if isinstance(found, str) else None


def repo_cache_dir(repo_id: str, repo_type: str = "model", cache_dir: str | Path | None = None) -> Path:
    """The folder the hub client keeps a repo's files in (`models--org--name`, `datasets--org--name`)."""
    return Path(cache_dir or hub_cache()) / f"{repo_type}s--{repo_id.replace('/', '--')}"


def snapshot_revision(path: str | Path) -> str | None:
    """The commit hash of a file inside the hub cache (`.../snapshots/<commit>/...`), else None."""
    parts = Path(path).parts
    if "snapshots" in parts:
        i = parts.index("snapshots")
        if i + 1 < len(parts):
            return parts[i + 1]
    return None


def prepared_dataset(hub_id: str, config: str | None = None, cache_dir: str | Path | None = None) -> Path | None:
    """The `datasets` cache folder holding a prepared copy of `hub_id` (and `config`), else None.

    `datasets` keeps a loaded hub dataset as Arrow files under `{cache}/{org}___{name}/{config}/`,
    which is what `load_dataset` reads offline (HF_DATASETS_OFFLINE=1)."""
    base = Path(cache_dir or datasets_cache()) / hub_id.replace("/", "___")
    where = base / (config or "default")
    if where.is_dir() and any(where.rglob("dataset_info.json")):
        return where
    return None


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks (weight files are hundreds of MB)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
